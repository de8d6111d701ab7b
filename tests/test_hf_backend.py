"""The hf backend on a tiny random Llama (fast) and on the real SmolLM2 (slow)."""

from __future__ import annotations

import math
import random

import pytest

from agents.backends import GenerationRequest, expected_rating, truncate_at_stop
from agents.backends.hf import HFBackend


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, max_batch_tokens=512)


def test_batch_returns_n_completions_per_request_within_budget(tiny_backend):
    requests = [
        GenerationRequest(user("hello"), n=3, max_new_tokens=5, temperature=1.0, seed=1),
        GenerationRequest(user("a much longer prompt " * 40), n=1, max_new_tokens=7, temperature=0.0),
        GenerationRequest(user("third"), n=2, max_new_tokens=5, temperature=1.0, seed=2),
    ]
    out = tiny_backend.generate(requests)
    assert [len(c) for c in out] == [3, 1, 2]
    for request, completions in zip(requests, out):
        for completion in completions:
            assert 1 <= completion.num_tokens <= request.max_new_tokens
            assert completion.finish_reason in {"eos", "length"}
    # The small token budget forces several chunks; every row still comes back in order.
    assert tiny_backend.stats.calls >= 2


def test_seeded_sampling_is_reproducible_and_seed_sensitive(tiny_backend):
    def sample(seed):
        request = GenerationRequest(user("tell me something"), n=2, max_new_tokens=8, temperature=1.0, seed=seed)
        return [c.text for c in tiny_backend.generate([request])[0]]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_greedy_generation_is_independent_of_batch_neighbours(tiny_backend):
    alone = tiny_backend.generate([GenerationRequest(user("fixed prompt"), max_new_tokens=6, temperature=0)])
    with_others = tiny_backend.generate(
        [GenerationRequest(user("other " * 30), max_new_tokens=6, temperature=0),
         GenerationRequest(user("fixed prompt"), max_new_tokens=6, temperature=0)]
    )
    assert alone[0][0].text == with_others[1][0].text


def test_stop_strings_cut_the_text():
    assert truncate_at_stop("abc STOP def", ("STOP",)) == ("abc ", "STOP")
    assert truncate_at_stop("abc", ("STOP",)) == ("abc", None)
    assert truncate_at_stop("x;y.z", (".", ";")) == ("x", ";")
    assert truncate_at_stop("a\n\nb", ("\n", "\n\n")) == ("a", "\n\n")  # the longest on a tie


def test_score_matches_a_direct_forward_pass(tiny_backend):
    import torch

    prompt, continuation = user("score me"), "some continuation text"
    (scored,) = tiny_backend.score([prompt], [continuation], end_of_turn=False)
    model = tiny_backend.model
    head = tiny_backend.renderer.prompt_ids(prompt)
    tail = tiny_backend.renderer.encode(continuation)
    with torch.no_grad():
        logits = model(torch.tensor([head + tail])).logits[0]
    direct = torch.log_softmax(logits, -1)[len(head) - 1 : -1].gather(-1, torch.tensor(tail)[:, None]).squeeze(-1)
    assert len(scored) == len(tail)
    assert torch.allclose(torch.tensor(scored), direct, atol=1e-4)


def test_next_token_logprobs_are_a_distribution_slice(tiny_backend):
    digits = [str(d) for d in range(1, 8)]
    (logprobs,) = tiny_backend.next_token_logprobs([user("rate it")], digits, prefix="Rating: ")
    assert set(logprobs) == set(digits)
    assert all(v <= 0 for v in logprobs.values())
    assert sum(math.exp(v) for v in logprobs.values()) <= 1.0 + 1e-5
    rating = expected_rating(logprobs, list(range(1, 8)))
    assert 1 <= rating <= 7


def test_expected_rating_weights_the_scale():
    assert expected_rating({"1": math.log(0.5), "3": math.log(0.5)}, [1, 2, 3]) == pytest.approx(2.0)
    assert expected_rating({}, [1, 2, 3]) is None


def test_invalid_requests_are_rejected():
    for bad in ({"n": 0}, {"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}):
        with pytest.raises(ValueError):
            GenerationRequest(user("x"), **bad)


@pytest.mark.slow
def test_real_model_answers_a_batch_with_distinct_completions(smollm_backend):
    prompts = [
        "What is a good way to apologise to a friend?",
        "Name three fruits.",
        "Should I tell my boss I made a mistake?",
        "Write one sentence about the ocean.",
    ]
    requests = [GenerationRequest(user(p), max_new_tokens=32, temperature=0.7, seed=i) for i, p in enumerate(prompts)]
    out = smollm_backend.generate(requests)
    texts = [completions[0].text for completions in out]
    assert all(len(t.split()) >= 3 for t in texts)
    assert len(set(texts)) == 4


@pytest.mark.slow
def test_real_model_prefers_a_sensible_continuation_over_shuffled_tokens(smollm_backend):
    prompt = user("What is the capital of France?")
    sensible = "The capital of France is Paris."
    tokens = smollm_backend.tokenizer(sensible, add_special_tokens=False)["input_ids"]
    shuffled_ids = tokens[:]
    random.Random(0).shuffle(shuffled_ids)
    shuffled = smollm_backend.tokenizer.decode(shuffled_ids)
    good, bad = smollm_backend.score([prompt, prompt], [sensible, shuffled])
    assert sum(good) > sum(bad) + 5
