"""The vllm backend without vLLM: its install hint and its pure request translation (no fake engine)."""

from __future__ import annotations

import sys

import pytest

from agents.backends import BackendUnavailable, GenerationRequest, create_backend
from agents.backends.vllm import completion_from_output, sampling_kwargs
from agents.seeding import sample_seed


def test_missing_vllm_is_a_clear_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # absent even where vLLM is installed
    with pytest.raises(BackendUnavailable) as caught:
        create_backend("vllm", "smollm2-135m-instruct", gpu_memory_utilization=0.5)
    assert str(caught.value) == (
        "the vllm backend needs the optional extra: pip install 'socialign[vllm]' (needs a GPU)"
    )


def test_sampling_kwargs_carry_every_setting_of_the_request_one_seeded_sample_each():
    request = GenerationRequest(
        [{"role": "user", "content": "hi"}],
        prefix="Sure,",
        n=3,
        temperature=0.9,
        top_p=0.8,
        max_new_tokens=42,
        stop=("\n\n", "User:"),
        seed=11,
        logprobs=True,
    )
    common = {
        "n": 1,
        "temperature": 0.9,
        "top_p": 0.8,
        "max_tokens": 42,
        "skip_special_tokens": False,
        "stop": ["\n\n", "User:"],
        "logprobs": 0,  # the sampled token's own log-prob
    }
    assert [sampling_kwargs(request, k) for k in range(3)] == [
        {**common, "seed": sample_seed(11, k)} for k in range(3)
    ]
    assert len({sample_seed(11, k) for k in range(3)}) == 3


def test_sampling_kwargs_leave_out_empty_stops_and_keep_greedy_unseeded_defaults():
    kwargs = sampling_kwargs(GenerationRequest([{"role": "user", "content": "hi"}], temperature=0.0))
    assert kwargs == {
        "n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 128, "seed": None, "skip_special_tokens": False
    }


EOS = 2


def test_vllm_outputs_map_to_eos_stop_and_length():
    # EOS: vLLM leaves the EOS id in token_ids and reports stop_reason None.
    eos = completion_from_output(" Hi there", [10, 11, EOS], "stop", None, [-0.1, -0.2, -0.3], EOS)
    assert (eos.finish_reason, eos.stop_string, eos.token_ids, eos.logprobs) == ("eos", None, (10, 11), (-0.1, -0.2))
    assert eos.num_tokens == 3 and eos.text == " Hi there"
    # Another end token of the generation config: vLLM stops on it as a stop token id.
    other_end = completion_from_output("Hi", [10, 7], "stop", 7, None, EOS)
    assert (other_end.finish_reason, other_end.token_ids, other_end.logprobs) == ("eos", (10,), None)
    # A stop string: the text is cut, the tokens that spelled it stay.
    stop = completion_from_output("Step 1", [10, 12, 13], "stop", "\n\n", [-1.0, -2.0, -3.0], EOS)
    assert (stop.finish_reason, stop.stop_string, stop.token_ids, stop.logprobs) == (
        "stop", "\n\n", (10, 12, 13), (-1.0, -2.0, -3.0)
    )
    length = completion_from_output("a b", [10, 11], "length", None, None, EOS)
    assert (length.finish_reason, length.stop_string, length.token_ids) == ("length", None, (10, 11))
