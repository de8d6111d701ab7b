"""Which process of a launch this is, and where it trains.

accelerate forms a process group on CPUs (DDP over gloo) only when told to use the CPU. On a
machine without an accelerator we tell it whenever the launcher started several processes, so
`torchrun --nproc_per_node N -m socialign.cli train ...` trains data-parallel on CPU cores, as
`accelerate launch` does on GPUs.
"""

from __future__ import annotations

import os

import torch
from accelerate import PartialState


def cpu_process_group() -> bool:
    return not torch.accelerator.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_state() -> PartialState:
    """The launch's shared state; the first call in a process decides it, so every caller uses this."""
    return PartialState(cpu=cpu_process_group())
