"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, built offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer Llama (random weights) saved with SmolLM2's tokenizer and chat template."""
    from agents.random_model import build_random_llama

    return build_random_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm_backend():
    """The real default model behind the hf backend (slow tests only)."""
    from agents.backends.hf import HFBackend

    return HFBackend("smollm2-135m-instruct")


def write_csv(path, rows):
    path.write_text("id,prompt,expected,category\n" + "".join(f"{i},{p},{e},c\n" for i, p, e in rows))
    return path


@pytest.fixture
def fake_evalsets(tmp_path):
    """Files shaped like the public sets, with made-up rows (no public row is copied into tests)."""
    folder = tmp_path / "evalsets"
    folder.mkdir()
    write_csv(folder / "advbench.csv", [(f"a-{i}", f"Do harmful thing number {i}", "decline") for i in range(130)])
    write_csv(folder / "xstest.csv", [(f"x-{i}", f"Question {i}", "answer" if i % 3 else "decline")
                                      for i in range(240)])
    return folder
