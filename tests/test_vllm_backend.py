"""The vllm backend without vLLM: its install hint and its pure request translation (no fake engine)."""

from __future__ import annotations

import sys

import pytest

from agents.backends import BackendUnavailable, GenerationRequest, create_backend
from agents.backends.vllm import sampling_kwargs


def test_missing_vllm_is_a_clear_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # absent even where vLLM is installed
    with pytest.raises(BackendUnavailable) as caught:
        create_backend("vllm", "smollm2-135m-instruct", gpu_memory_utilization=0.5)
    assert str(caught.value) == (
        "the vllm backend needs the optional extra: pip install 'socialign[vllm]' (needs a GPU)"
    )


def test_sampling_kwargs_carry_every_setting_of_the_request():
    request = GenerationRequest(
        [{"role": "user", "content": "hi"}],
        n=3,
        temperature=0.9,
        top_p=0.8,
        max_new_tokens=42,
        stop=("\n\n", "User:"),
        seed=11,
    )
    assert sampling_kwargs(request) == {
        "n": 3,
        "temperature": 0.9,
        "top_p": 0.8,
        "max_tokens": 42,
        "seed": 11,
        "stop": ["\n\n", "User:"],
    }


def test_sampling_kwargs_leave_out_empty_stops_and_keep_greedy_unseeded_defaults():
    kwargs = sampling_kwargs(GenerationRequest([{"role": "user", "content": "hi"}], temperature=0.0))
    assert kwargs == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 128, "seed": None}
