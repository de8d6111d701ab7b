"""The hf backend on a tiny random Llama (fast) and on the real SmolLM2 (slow)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from agents.backends import GenerationRequest, expected_rating, truncate_at_stop
from agents.backends.hf import HFBackend
from align.batching import collate
from align.logprobs import completion_logps
from align.tokenization import TokenizedPair, tokenize_pair


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, max_batch_tokens=512)


def greedy(backend, messages, prefix="", **options):
    request = GenerationRequest(messages, prefix=prefix, temperature=0.0, **{"max_new_tokens": 12, **options})
    return backend.generate([request])[0][0]


def forward_logprobs(backend, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
    """Log-probs of ``token_ids`` after ``prompt_ids`` from one plain forward pass."""
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt_ids + token_ids])).logits[0].float()
    targets = torch.tensor(token_ids)[:, None]
    return torch.log_softmax(logits, -1)[len(prompt_ids) - 1 : -1].gather(-1, targets).squeeze(-1).tolist()


def trainer_logps(backend, pair: TokenizedPair) -> tuple[float, float]:
    """The trainer's policy log-probs (chosen, rejected) of a tokenized pair."""
    with torch.no_grad():
        sums, _ = completion_logps(backend.model, collate([pair], backend.tokenizer.pad_token_id))
    return sums[0].item(), sums[1].item()


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


def test_n_samples_are_distinct_and_reproducible_whatever_shares_the_batch(tiny_backend):
    def request(seed, n=3):
        return GenerationRequest(user("tell me something"), n=n, max_new_tokens=8, temperature=1.0, seed=seed)

    (alone,) = tiny_backend.generate([request(7)])
    crowd = tiny_backend.generate([GenerationRequest(user("other " * 40), n=2, max_new_tokens=8, seed=1), request(7)])
    ids = [c.token_ids for c in alone]
    assert [c.token_ids for c in crowd[1]] == ids
    assert len(set(ids)) == 3  # every sample has its own seed
    # seed + sample collided: request 7's second sample was request 8's first. sample_seed cannot.
    (next_seed,) = tiny_backend.generate([request(8, n=1)])
    assert next_seed[0].token_ids not in ids


def test_rows_with_the_same_prompt_run_it_through_the_model_once(tiny_backend):
    """n samples and repeated requests share one prompt pass; then each row runs its last prompt token."""
    same = GenerationRequest(user("tell me something"), n=3, max_new_tokens=4, temperature=1.0, seed=7)
    other = GenerationRequest(user("something else entirely"), max_new_tokens=4, temperature=0)
    (alone,) = tiny_backend.generate([other])  # one row: nothing to share, the usual prompt pass
    shapes = []
    hook = tiny_backend.model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        out = tiny_backend.generate([same, other, same])
    finally:
        hook.remove()
    width = max(len(tiny_backend.renderer.prompt_ids(r.messages)) for r in (same, other))
    assert shapes[:2] == [(2, width - 1), (7, 1)]  # two distinct prompts, then all seven rows
    assert [c.token_ids for c in out[0]] == [c.token_ids for c in out[2]]
    assert out[1][0].token_ids == alone[0].token_ids


def test_nucleus_sampling_keeps_the_top_p_tokens_in_proportion():
    from agents.backends.hf import sample_nucleus

    probs = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])  # top_p 0.7 keeps tokens 1 and 3 (0.4 + 0.3 >= 0.7)
    draws = 4000
    logits = probs.log().repeat(draws, 1)
    generators = [torch.Generator().manual_seed(i) for i in range(draws)]
    tokens = sample_nucleus(logits, torch.ones(draws), torch.full((draws,), 0.7), generators)
    counts = torch.bincount(tokens, minlength=5)
    assert counts[[0, 2, 4]].sum() == 0
    assert abs(counts[1] / draws - 0.4 / 0.7) < 0.03  # 4 standard errors
    # top_p 1 samples the whole distribution; temperature 0.5 sharpens it (p^2, renormalised).
    full = torch.bincount(sample_nucleus(logits, torch.ones(draws), torch.ones(draws), generators), minlength=5)
    assert (full / draws - probs).abs().max() < 0.03
    sharp = torch.bincount(sample_nucleus(logits, torch.full((draws,), 0.5), torch.ones(draws), generators), minlength=5)
    assert (sharp / draws - probs**2 / (probs**2).sum()).abs().max() < 0.03
    # A row's draw does not depend on its neighbours: row 0 alone draws what it drew among 4000.
    alone = [sample_nucleus(logits[:1], torch.ones(1), torch.full((1,), 0.7), [torch.Generator().manual_seed(i)])
             for i in range(20)]
    assert torch.cat(alone).tolist() == tokens[:20].tolist()


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


def test_text_is_raw_and_matches_the_token_ids(tiny_backend):
    completions = [greedy(tiny_backend, user(f"question {i}"), max_new_tokens=6) for i in range(6)]
    for completion in completions:
        assert completion.finish_reason == "length"
        assert len(completion.token_ids) == 6 == completion.num_tokens
        assert completion.text == tiny_backend.decode(list(completion.token_ids))
    # Not stripped: SmolLM2's vocabulary is mostly space-led words, so some reply starts with one.
    assert any(c.text != c.text.strip() for c in completions)


def test_a_stop_string_is_reported_and_cut_with_its_tokens_kept(tiny_backend):
    free = greedy(tiny_backend, user("hi"))
    ids = list(free.token_ids)
    stop = tiny_backend.decode(ids[4:6])  # the text of the 5th and 6th tokens
    stopped = greedy(tiny_backend, user("hi"), stop=("never appears \x00", stop))
    cut = free.text.index(stop)
    assert (stopped.finish_reason, stopped.stop_string) == ("stop", stop)
    assert stopped.text == free.text[:cut]
    # The ids run to the token that completes the stop string, and no further.
    assert ids[: len(stopped.token_ids)] == list(stopped.token_ids)
    assert stop in tiny_backend.decode(list(stopped.token_ids))
    assert stop not in tiny_backend.decode(list(stopped.token_ids[:-1]))
    assert stopped.num_tokens == len(stopped.token_ids)  # the forced end is not a generated token


def test_the_model_ending_its_turn_is_eos_not_stop(tiny_model_dir):
    backend = HFBackend(tiny_model_dir)
    eos = backend.tokenizer.eos_token_id
    # A real forward pass whose last layer is pushed towards EOS: the model "wants" to end.
    backend.model.lm_head.register_forward_hook(lambda module, args, out: out.index_add(
        -1, torch.tensor([eos]), torch.full((*out.shape[:-1], 1), 1e4)))
    completion = greedy(backend, user("hi"), stop=("\n",))
    assert (completion.finish_reason, completion.stop_string) == ("eos", None)
    assert completion.token_ids == () and completion.text == ""
    assert completion.num_tokens == 1  # the EOS itself


def test_a_prefix_is_continued_from_the_renderers_prompt(tiny_backend):
    messages, prefix = user("How do I say sorry?"), "Sure, here is how: "
    prompt_ids = tiny_backend.renderer.prompt_ids(messages, prefix)
    plain_ids = tiny_backend.renderer.prompt_ids(messages)
    # The prefix extends the open assistant turn: no second turn, no end-of-turn in between.
    assert prompt_ids[: len(plain_ids)] == plain_ids
    start = tiny_backend.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert prompt_ids.count(start) == plain_ids.count(start)
    # A phase's prompts tokenized in one call are the same ids as one by one.
    many = tiny_backend.renderer.prompt_ids_many([(messages, prefix), (messages, ""), (user("other " * 9), "")])
    assert many == [prompt_ids, plain_ids, tiny_backend.renderer.prompt_ids(user("other " * 9))]
    completion = greedy(tiny_backend, messages, prefix, logprobs=True)
    with torch.no_grad():
        direct = tiny_backend.model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(prompt_ids) :].tolist()
    assert list(completion.token_ids) == direct
    assert completion.logprobs == pytest.approx(forward_logprobs(tiny_backend, prompt_ids, direct), abs=1e-4)


def test_logprobs_align_with_sampled_tokens_and_ignore_temperature(tiny_backend):
    requests = [
        GenerationRequest(user("first " * 20), prefix="Well,", n=2, temperature=1.3, top_p=0.9, seed=3, logprobs=True),
        GenerationRequest(user("second"), max_new_tokens=9, temperature=0.5, seed=4, logprobs=True),
        GenerationRequest(user("third"), max_new_tokens=5, seed=5),
    ]
    out = tiny_backend.generate(requests)
    for request, completions in zip(requests[:2], out):
        prompt_ids = tiny_backend.renderer.prompt_ids(request.messages, request.prefix)
        for completion in completions:
            assert len(completion.logprobs) == len(completion.token_ids) > 0
            expected = forward_logprobs(tiny_backend, prompt_ids, list(completion.token_ids))
            assert completion.logprobs == pytest.approx(expected, abs=1e-4)
    assert out[2][0].logprobs is None


def test_score_is_the_trainers_policy_logprob(tiny_backend):
    prompt = [{"role": "system", "content": "Be kind."}, *user("Is it fine to lie to a friend?")]
    chosen, rejected = "No, honesty keeps trust.", "Yes, always."
    pair = tokenize_pair(prompt, chosen, rejected, tiny_backend.renderer, max_length=4096)
    scored = tiny_backend.score([prompt, prompt], [chosen, rejected])
    # end_of_turn=True scores the closing <|im_end|> too: exactly the tokens the trainer trains on.
    assert [len(s) for s in scored] == [len(pair.chosen_ids), len(pair.rejected_ids)]
    assert [sum(s) for s in scored] == pytest.approx(trainer_logps(tiny_backend, pair), abs=1e-4)
    # A step that does not end the turn (end_of_turn=False), as the trainer tokenizes step data.
    open_pair = tokenize_pair(prompt, chosen, rejected, tiny_backend.renderer, max_length=4096, end_of_turn=False)
    open_scored = tiny_backend.score([prompt, prompt], [chosen, rejected], end_of_turn=False)
    assert [sum(s) for s in open_scored] == pytest.approx(trainer_logps(tiny_backend, open_pair), abs=1e-4)
    assert len(open_scored[0]) == len(scored[0]) - 2  # no "<|im_end|>" + "\n"


def test_score_after_a_prefix_is_the_trainers_logprob_of_the_renderers_split(tiny_backend):
    prompt, prefix = user("Plan a picnic."), "Step 1: pick a park.\nStep 2:"
    renderer = tiny_backend.renderer
    for end_of_turn in (True, False):
        chosen, rejected = " bring food.", " forget the food."
        heads_and_tails = [renderer.split(prompt, c, prefix, end_of_turn) for c in (chosen, rejected)]
        assert heads_and_tails[0][0] == heads_and_tails[1][0]
        pair = TokenizedPair(heads_and_tails[0][0], heads_and_tails[0][1], heads_and_tails[1][1])
        scored = tiny_backend.score([prompt, prompt], [chosen, rejected], [prefix, prefix], end_of_turn)
        assert [sum(s) for s in scored] == pytest.approx(trainer_logps(tiny_backend, pair), abs=1e-4)


def test_score_matches_a_direct_forward_pass(tiny_backend):
    prompt, continuation = user("score me"), "some continuation text"
    (scored,) = tiny_backend.score([prompt], [continuation], end_of_turn=False)
    head = tiny_backend.renderer.prompt_ids(prompt)
    tail = tiny_backend.renderer.encode(continuation)
    direct = forward_logprobs(tiny_backend, head, tail)
    assert len(scored) == len(tail)
    assert scored == pytest.approx(direct, abs=1e-4)


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


@pytest.mark.slow
def test_real_model_ends_its_turn_with_eos_and_continues_a_prefix(smollm_backend):
    question = user("What is the capital of France? Answer in one short sentence.")
    [[answer], [continued]] = smollm_backend.generate([
        GenerationRequest(question, max_new_tokens=64, temperature=0.0),
        GenerationRequest(question, prefix="The capital of France is", max_new_tokens=16, temperature=0.0),
    ])
    assert (answer.finish_reason, answer.stop_string) == ("eos", None)
    assert answer.num_tokens == len(answer.token_ids) + 1
    assert "Paris" in answer.text
    # The reply goes on from the prefix: it names the city next, it does not restart the answer.
    assert continued.text.lstrip().startswith("Paris")
    assert continued.text.startswith(" ")  # raw: the space the next word carries is kept
