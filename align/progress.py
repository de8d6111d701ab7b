"""Progress bars of training and sampling, and the one switch (`--quiet`) that turns them all off.

A command sets the switch once; the trainer, the self-play samplers and the libraries' own bars
(transformers' weight loading, datasets' maps) all read it, so no flag threads through them.
"""

from __future__ import annotations

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet
    if quiet:
        import datasets
        from transformers.utils import logging

        logging.disable_progress_bar()
        datasets.disable_progress_bars()


def progress_bar(iterable=None, *, disable: bool = False, **options) -> tqdm:
    """A tqdm bar, off under --quiet (and where the caller disables it, e.g. on other processes)."""
    return tqdm(iterable, disable=_quiet or disable, **options)
