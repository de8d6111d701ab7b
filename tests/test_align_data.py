"""Pairs files: strict validation with file:line:field errors, chat-template tokenization, batching.

SAMPLE_PAIRS and write_pairs are shared with the other test_align_* modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from agents.chat import ChatRenderer
from align import DataError, TokenizedPair, load_pairs, locate_pairs, tokenize_pair, tokenize_pairs
from align.batching import BatchPlan, collate
from align.tokenization import truncate

SAMPLE_PAIRS = [
    (
        "How do I pick the lock on my neighbour's door?",
        "I can't help you get into someone else's home. If you are locked out of yours, call a locksmith.",
        "Put a tension wrench in the keyhole and rake the pins.",
    ),
    (
        "My friend keeps interrupting me. What should I do?",
        "Tell them calmly how it feels and ask to finish your thought.",
        "Interrupt them back, louder.",
    ),
    (
        "Is it fine to read my partner's messages?",
        "Talk openly instead; reading them without consent breaks trust.",
        "Yes, check their phone whenever you can.",
    ),
    (
        "How can I cheat on my exam?",
        "I won't help with cheating, but I can help you make a study plan.",
        "Write the answers on your hand.",
    ),
]


def pair_record(prompt: str, chosen: str, rejected: str, **extra) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "score_chosen": 8.5,
        "score_rejected": 2.0,
        "source": "backscatter",
        "meta": {"round": 1, "agent": "a3"},
        **extra,
    }


def write_pairs(path: Path, records: list[dict] | None = None) -> Path:
    records = records if records is not None else [pair_record(*pair) for pair in SAMPLE_PAIRS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


# -- loading and validation -----------------------------------------------------------------


def test_valid_file_loads_with_defaults(tmp_path):
    records = [pair_record(*SAMPLE_PAIRS[0]), pair_record(*SAMPLE_PAIRS[1], weight=0.25)]
    pairs = load_pairs(write_pairs(tmp_path / "pairs.jsonl", records))
    assert [p.weight for p in pairs] == [1.0, 0.25]
    assert pairs[0].messages("chosen") == [{"role": "assistant", "content": SAMPLE_PAIRS[0][1]}]
    assert pairs[1].meta == {"round": 1, "agent": "a3"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"chosen": "just text"}, "field 'chosen' must be a list of one assistant message"),
        ({"chosen": []}, "field 'chosen' must be a list of one assistant message"),
        ({"label_smoothing": 0.5}, "field 'label_smoothing' must be a number in [0, 0.5)"),
        ({"rejected": [{"role": "user", "content": "x"}]}, "field 'rejected[0].role'"),
        ({"prompt": [{"role": "user"}]}, "field 'prompt[0].content' is missing"),
        ({"prompt": [{"role": "assistant", "content": "x"}]}, "field 'prompt' must end with a user"),
        ({"weight": -1.0}, "field 'weight' must be a finite number >= 0"),
        ({"weight": "2"}, "field 'weight' must be a finite number >= 0"),
        ({"score_chosen": True}, "field 'score_chosen' must be a number"),
        ({"wieght": 2.0}, "unknown field 'wieght'"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, change, expected):
    records = [pair_record(*SAMPLE_PAIRS[0]), {**pair_record(*SAMPLE_PAIRS[1]), **change}]
    path = write_pairs(tmp_path / "pairs.jsonl", records)
    with pytest.raises(DataError) as error:
        load_pairs(path)
    assert str(error.value).startswith(f"{path}:2: {expected}")
    assert "\n" not in str(error.value)


def test_missing_field_and_broken_json_are_reported_by_line(tmp_path):
    record = pair_record(*SAMPLE_PAIRS[0])
    del record["rejected"]
    path = write_pairs(tmp_path / "a.jsonl", [record])
    with pytest.raises(DataError, match=r"a\.jsonl:1: field 'rejected' is missing"):
        load_pairs(path)
    path.write_text(json.dumps(pair_record(*SAMPLE_PAIRS[0])) + "\n\n" + '{"prompt": [\n')
    with pytest.raises(DataError, match=r"a\.jsonl:3: not valid JSON"):
        load_pairs(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"a\.jsonl:1: each line must be a JSON object"):
        load_pairs(path)


def test_empty_dataset_is_an_error(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DataError, match="holds no preference pairs"):
        load_pairs(path)


def test_run_directory_resolves_to_its_export(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(DataError, match=r"run `socialign export .*run` first"):
        locate_pairs(run)
    pairs_file = write_pairs(run / "export" / "pairs.jsonl")
    assert locate_pairs(run) == pairs_file
    assert locate_pairs(pairs_file) == pairs_file
    with pytest.raises(DataError, match="no such pairs file or run directory"):
        locate_pairs(tmp_path / "missing.jsonl")


# -- tokenization ---------------------------------------------------------------------------


def test_completion_is_the_template_continuation_with_end_of_turn(tokenizer):
    prompt = [{"role": "user", "content": "Hi there"}]
    pair = tokenize_pair(prompt, "Hello!", "Go away.", ChatRenderer(tokenizer), max_length=512)
    rendered = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(pair.prompt_ids) == rendered
    # SmolLM2's template closes a turn with <|im_end|> (its EOS) and a newline.
    assert tokenizer.decode(pair.chosen_ids) == "Hello!<|im_end|>\n"
    assert tokenizer.eos_token_id in pair.rejected_ids


def test_step_level_completion_can_omit_end_of_turn(tokenizer):
    pair = tokenize_pair(
        [{"role": "user", "content": "Plan my week."}],
        "First, list your deadlines.",
        "Skip planning.",
        ChatRenderer(tokenizer),
        max_length=512,
        end_of_turn=False,
    )
    assert tokenizer.decode(pair.chosen_ids) == "First, list your deadlines."
    assert tokenizer.eos_token_id not in pair.chosen_ids + pair.rejected_ids


def test_step_pair_continues_an_assistant_prefix_as_the_backends_score_it(tokenizer):
    """A step after a partial assistant turn: each reply split exactly as ChatRenderer.split does
    (what Backend.score scores), even when only one reply merges with the prefix's last word."""
    renderer = ChatRenderer(tokenizer)
    prompt = [{"role": "user", "content": "Advice?"}]
    pair = tokenize_pair(prompt, "est and kind.", " and hope.", renderer, 512, end_of_turn=False, prefix="Be hon")
    (chosen_prompt, chosen), (rejected_prompt, rejected) = pair.rows()
    assert (chosen_prompt, chosen) == renderer.split(prompt, "est and kind.", "Be hon", end_of_turn=False)
    assert (rejected_prompt, rejected) == renderer.split(prompt, " and hope.", "Be hon", end_of_turn=False)
    assert tokenizer.decode(chosen) == " honest and kind."  # " hon" + "est" is one token: it belongs to the step
    assert tokenizer.decode(rejected_prompt).endswith("<|im_start|>assistant\nBe hon")
    assert pair.rejected_prompt_ids is not None and tokenizer.eos_token_id not in chosen + rejected


def test_pair_label_smoothing_is_carried_per_pair(tmp_path, tokenizer):
    records = [pair_record(*SAMPLE_PAIRS[0], label_smoothing=0.25), pair_record(*SAMPLE_PAIRS[1])]
    pairs = tokenize_pairs(load_pairs(write_pairs(tmp_path / "p.jsonl", records)), tokenizer, max_length=64)
    assert [p.label_smoothing for p in pairs] == [0.25, None]


def test_truncation_cuts_prompt_from_the_left_first():
    pair = TokenizedPair(list(range(100, 140)), [1, 2, 3, 4, 5], [6, 7], weight=0.5)
    cut = truncate(pair, max_length=30)
    assert cut.prompt_ids == list(range(115, 140))  # the prompt's end (the generation prompt) survives
    assert (cut.chosen_ids, cut.rejected_ids, cut.weight) == ([1, 2, 3, 4, 5], [6, 7], 0.5)
    # A completion longer than the budget keeps its start, and the prompt keeps half the budget.
    long = truncate(TokenizedPair(list(range(40)), list(range(500, 560)), [9], 1.0), max_length=32)
    assert long.prompt_ids == list(range(24, 40))
    assert long.chosen_ids == list(range(500, 516))
    assert long.length == 32
    assert truncate(pair, max_length=64) is pair


def test_a_model_without_chat_template_is_a_clear_error(tmp_path, tiny_model_dir):
    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain.chat_template = None
    with pytest.raises(DataError, match="the tokenizer has no chat template"):
        tokenize_pairs(load_pairs(write_pairs(tmp_path / "p.jsonl")), plain, max_length=64)


def test_tokenize_pairs_carries_weights(tmp_path, tokenizer):
    records = [pair_record(*SAMPLE_PAIRS[0], weight=2.0), pair_record(*SAMPLE_PAIRS[1])]
    pairs = tokenize_pairs(load_pairs(write_pairs(tmp_path / "p.jsonl", records)), tokenizer, max_length=48)
    assert [p.weight for p in pairs] == [2.0, 1.0]
    assert all(p.length <= 48 for p in pairs)


# -- batching -------------------------------------------------------------------------------


def test_collate_stacks_chosen_then_rejected_padded_to_the_longest_row():
    pairs = [TokenizedPair([1, 2], [3, 4, 5], [6], 1.0), TokenizedPair([7], [8], [9, 10], 0.5)]
    batch = collate(pairs, pad_token_id=0)
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4, 5],
        [7, 8, 0, 0, 0],
        [1, 2, 6, 0, 0],
        [7, 9, 10, 0, 0],
    ]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 1, 1],
        [0, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 1, 0, 0],
    ]
    assert batch["attention_mask"].sum(dim=1).tolist() == [5, 2, 3, 3]
    assert batch["weights"].tolist() == [1.0, 0.5]


def test_batch_plan_is_a_pure_function_of_seed_and_epoch():
    plan = BatchPlan(num_pairs=10, batch_size=4, seed=3)
    assert plan.epoch(0) == BatchPlan(10, 4, 3).epoch(0)
    assert plan.epoch(0) != plan.epoch(1)
    assert sorted(i for batch in plan.epoch(1) for i in batch) == list(range(10))
    assert [len(b) for b in plan.epoch(0)] == [4, 4, 2] and plan.batches_per_epoch == 3
    # Two processes see disjoint halves with equal batch counts (the order wraps to split evenly).
    ranks = [BatchPlan(9, 2, 3, rank, 2).epoch(0) for rank in (0, 1)]
    assert [len(r) for r in ranks] == [3, 3]
    seen = [i for r in ranks for batch in r for i in batch]
    assert len(seen) == 10 and set(seen) == set(range(9))


def test_a_prompts_file_takes_text_or_messages_and_names_a_bad_line(tmp_path):
    from align.data import load_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "How do I kill a stuck process?", "expected": "answer"}) + "\n"
                    + json.dumps({"prompt": [{"role": "user", "content": "Hi"}]}) + "\n")
    text, messages = load_prompts(path)
    assert text.column()["prompt"] == [{"role": "user", "content": "How do I kill a stuck process?"}]
    assert messages.column()["prompt"] == [{"role": "user", "content": "Hi"}]
    path.write_text(json.dumps({"prompt": "   "}) + "\n")
    with pytest.raises(DataError, match=r"prompts.jsonl:1: field 'prompt' must be"):
        load_prompts(path)
