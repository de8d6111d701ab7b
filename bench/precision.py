"""One training step (forward + backward + AdamW) of a model in fp32 and under bf16 autocast.

    python bench/precision.py [--model smollm2-135m-instruct] [--batch 8] [--tokens 160] [--steps 3]

Prints seconds per step for each and their ratio: what `train --mixed-precision bf16` buys on
this machine's CPU (or GPU). The first step of each is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from agents.registry import resolve


def seconds_per_step(model, batch: torch.Tensor, bf16: bool, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return statistics.fmean(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(resolve(args.model), dtype=torch.float32).to(device)
    batch = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    batch = batch.to(device)
    fp32 = seconds_per_step(model, batch, False, args.steps)
    bf16 = seconds_per_step(model, batch, True, args.steps)
    print(f"{device}, {torch.get_num_threads()} threads, batch {args.batch} x {args.tokens} tokens")
    print(f"fp32 {fp32:.2f} s/step, bf16 autocast {bf16:.2f} s/step: bf16 / fp32 = {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
