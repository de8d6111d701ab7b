"""SFT on the tiny Llama: data formats and errors, assistant-only loss, length-grouped batches,
exact resume, the CLI, and a trained model that chats through the hf backend."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from test_align_data import SAMPLE_PAIRS
from test_align_train import Interrupted, assert_same_weights, interrupt_after, load_metrics
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.chat import ChatRenderer
from align import DataError, SFTConfig, load_sft, locate_sft, sft_loss, tokenize_sft, train_sft
from align.batching import BatchPlan, collate_examples
from align.logprobs import token_logps
from align.tokenization import TokenizedExample, truncate_example
from socialign.cli import main


def sft_record(question: str, answer: str, **extra) -> dict:
    """A row as `socialign export` writes it (sandbox/export.py)."""
    return {
        "prompt": [{"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": answer}],
        "meta": {"kind": "imitation", "score": 8.0},
        **extra,
    }


def write_sft(path, records=None):
    records = records if records is not None else [sft_record(q, a) for q, a, _ in SAMPLE_PAIRS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
    ]
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory):
    return write_sft(tmp_path_factory.mktemp("sft") / "sft.jsonl")


# -- data -------------------------------------------------------------------------------------


def test_the_three_formats_load_and_a_run_directory_means_its_sft_export(tmp_path):
    records = [sft_record("Q?", "A."), CONVERSATION, {"prompt": CONVERSATION["messages"][:2],
                                                     "completion": CONVERSATION["messages"][2:3]}]
    path = write_sft(tmp_path / "run" / "export" / "sft.jsonl", records)
    assert locate_sft(tmp_path / "run") == path
    examples = load_sft(path)
    assert [type(e).__name__ for e in examples] == ["SFTExample", "SFTConversation", "SFTExample"]
    assert examples[1].conversation()[1] == [False, False, True, False, True]  # every assistant turn learns
    with pytest.raises(DataError, match=r"run directory has no export/sft\.jsonl; run `socialign export"):
        locate_sft(tmp_path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"prompt": [{"role": "user", "content": "Q"}]}, "field 'completion' is missing"),
        ({**sft_record("Q", "A"), "completion": [{"role": "user", "content": "A"}]}, "field 'completion[0].role'"),
        ({**sft_record("Q", "A"), "completion": "A"}, "field 'completion' must be a list of one assistant message"),
        ({**sft_record("Q", "A"), "score": 3}, "unknown field 'score'"),
        ({"messages": [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}]},
         "field 'messages' must hold at least one assistant message"),
        ({"messages": [{"role": "user", "content": "Q"}]}, "field 'messages' must be a list of at least two"),
        ({"prompt": [{"role": "assistant", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]},
         "field 'prompt' must end with a user"),
    ],
)
def test_bad_sft_line_names_file_line_and_field(tmp_path, line, expected):
    path = write_sft(tmp_path / "sft.jsonl", [sft_record("Q", "A"), line])
    with pytest.raises(DataError) as error:
        load_sft(path)
    assert str(error.value).startswith(f"{path}:2: {expected}")


def test_bad_sft_file_through_the_cli_is_one_line_and_exit_2(tmp_path, tiny_model_dir):
    path = write_sft(tmp_path / "sft.jsonl", [sft_record("Q", "A"), {"prompt": "Q", "completion": "A"}])
    completed = subprocess.run(
        [sys.executable, "-m", "socialign.cli", "train", "--method", "sft", "--data", str(path),
         "--model", tiny_model_dir, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"socialign train: error: {path}:2: field 'prompt' must be a non-empty list of messages ({{'role', 'content'}})"
    ]
    assert not (tmp_path / "out").exists()


# -- masking -----------------------------------------------------------------------------------


def test_prompt_tokens_carry_no_loss_mask(tokenizer):
    prompt, answer = [{"role": "user", "content": "Hi there"}], "Hello!"
    (example,) = tokenize_sft(load_rows([sft_record("Hi there", answer)]), tokenizer, max_length=512)
    learned = [t for t, m in zip(example.input_ids, example.loss_mask) if m]
    assert tokenizer.decode(learned) == "Hello!<|im_end|>\n"  # the reply and the end of its turn
    prompt_ids = ChatRenderer(tokenizer).prompt_ids(prompt)
    assert example.input_ids[: len(prompt_ids)] == prompt_ids and not any(example.loss_mask[: len(prompt_ids)])

    (chat,) = tokenize_sft(load_rows([CONVERSATION]), tokenizer, max_length=512)
    spans = "".join(tokenizer.decode([t]) if m else "\0" for t, m in zip(chat.input_ids, chat.loss_mask))
    assert [s for s in spans.split("\0") if s] == [
        "Hello, how can I help?<|im_end|>\n",
        "Why did the chicken cross the road?<|im_end|>\n",
    ]


def test_sft_loss_is_transformers_loss_with_prompt_labels_ignored(tiny_model_dir, tokenizer):
    """Ours (logits only at learned positions) = the model's own loss with -100 on every prompt and
    padding label, not the loss over every token; and it moves when a learned target changes."""
    rows = load_rows([sft_record(q, a) for q, a, _ in SAMPLE_PAIRS[:3]] + [CONVERSATION])
    batch = collate_examples(tokenize_sft(rows, tokenizer, max_length=512), tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    logps, _ = token_logps(model, batch)
    ours = sft_loss(logps, logps.numel())

    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        reference = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}, labels=labels).loss
        everything = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        unmasked = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=everything).loss
        learned_changed = labels.clone()
        learned_changed[labels != -100] = 7
        changed = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=learned_changed).loss
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    assert unmasked.item() != pytest.approx(reference.item(), rel=1e-3)  # prompt tokens would count
    assert changed.item() != pytest.approx(reference.item(), rel=1e-3)


def test_tokenization_matches_trl_sft_trainer(tiny_model_dir, tokenizer, sft_file, tmp_path):
    from datasets import load_dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    dataset = load_dataset("json", data_files=str(sft_file), split="train").remove_columns("meta")
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=TRLSFTConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, report_to=[]),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    ours = tokenize_sft(load_sft(sft_file), tokenizer, max_length=1024)
    theirs = [trainer.train_dataset[i] for i in range(len(ours))]
    assert [e.input_ids for e in ours] == [t["input_ids"] for t in theirs]
    assert [e.loss_mask for e in ours] == [[int(label != -100) for label in t["labels"]] for t in theirs]


def test_truncation_keeps_the_prompts_end_and_the_replys_start():
    example = TokenizedExample(list(range(100)), [0] * 40 + [1] * 60)
    cut = truncate_example(example, max_length=32)
    assert cut.input_ids == list(range(24, 56))  # 16 prompt tokens (half the budget), the reply's first 16
    assert cut.loss_mask == [0] * 16 + [1] * 16
    assert truncate_example(example, max_length=100) is example


def test_length_grouped_batches_cover_the_epoch_and_pad_little():
    lengths = tuple([5, 500, 7, 480, 6, 510, 8, 490] * 4)
    plan = BatchPlan(len(lengths), batch_size=4, seed=1, lengths=lengths)
    batches = plan.epoch(0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 30 for b in batches)
    assert plan.epoch(0) == batches and plan.epoch(1) != batches


def test_length_grouped_batches_follow_the_seed_when_the_data_is_smaller_than_a_window():
    """62 rows of distinct lengths, batch 8: one window; steps must not be short-to-long for every seed."""
    lengths = tuple(range(100, 162))
    first_rows = {seed: [b[0] for b in BatchPlan(len(lengths), 8, seed, lengths=lengths).epoch(0)] for seed in range(4)}
    assert len({tuple(rows) for rows in first_rows.values()}) > 1
    assert any(rows != sorted(rows) for rows in first_rows.values())


# -- training ----------------------------------------------------------------------------------


def sft_config(**changes) -> SFTConfig:
    settings = {"lr": 1e-3, "batch_size": 2, "max_steps": 6, "save_steps": 2, "warmup_ratio": 0.2, "seed": 1}
    return SFTConfig(**settings | changes)


def test_sft_learns_and_writes_the_same_outputs_as_dpo(tiny_model_dir, sft_file, tmp_path):
    result = train_sft(sft_file, tiny_model_dir, tmp_path / "sft", sft_config(lr=5e-3, max_steps=12, grad_accum=2))
    history = result.history
    assert [row["step"] for row in history] == list(range(1, 13))
    assert history[-1]["loss"] < history[0]["loss"] - 1.0  # nats per assistant token
    assert {"loss", "lr", "grad_norm", "tokens_per_second", "seconds", "epoch"} <= set(history[0])
    assert (tmp_path / "sft" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = json.loads((tmp_path / "sft" / "train_config.json").read_text())
    assert recorded["method"] == "sft" and recorded["num_examples"] == 4
    assert recorded["config"]["group_by_length"] is True
    assert not (tmp_path / "sft" / "reference_logps.safetensors").exists()  # SFT has no reference
    assert [p.name for p in (tmp_path / "sft" / "checkpoints").iterdir()] == ["step-00000012"]


def test_sft_resume_after_a_kill_equals_an_uninterrupted_run(tiny_model_dir, sft_file, tmp_path):
    config = sft_config(lora=None)
    train_sft(sft_file, tiny_model_dir, tmp_path / "whole", config)
    with pytest.raises(Interrupted):
        train_sft(sft_file, tiny_model_dir, tmp_path / "killed", config, callbacks=[interrupt_after(3)])
    ran = []
    train_sft(sft_file, tiny_model_dir, tmp_path / "killed", config, resume=True, callbacks=[ran.append])
    assert [row["step"] for row in ran] == [3, 4, 5, 6]  # from the step-2 checkpoint
    assert [row["step"] for row in load_metrics(tmp_path / "killed")] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(tmp_path / "whole" / "model.safetensors", tmp_path / "killed" / "model.safetensors")
    whole = [row["loss"] for row in load_metrics(tmp_path / "whole")]
    assert [row["loss"] for row in load_metrics(tmp_path / "killed")] == pytest.approx(whole)


def test_cli_sft_with_lora_on_a_run_directory_and_the_model_chats(tiny_model_dir, tmp_path, capsys):
    from agents.backends import GenerationRequest
    from agents.backends.hf import HFBackend

    run = tmp_path / "run"
    write_sft(run / "export" / "sft.jsonl")
    args = ["train", "--method", "sft", "--data", str(run), "--model", tiny_model_dir, "--out",
            str(tmp_path / "out"), "--max-steps", "3", "--batch-size", "2", "--lora", "--lora-r", "4",
            "--no-group-by-length"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained 3 steps (loss " in out and str(tmp_path / "out" / "merged") in out
    recorded = json.loads((tmp_path / "out" / "train_config.json").read_text())
    assert recorded["config"]["lora"]["r"] == 4 and recorded["config"]["group_by_length"] is False
    assert recorded["config"]["lr"] == pytest.approx(2e-4)  # SFT's LoRA default

    backend = HFBackend(str(tmp_path / "out" / "merged"))
    (completions,) = backend.generate([GenerationRequest([{"role": "user", "content": "Hi"}], max_new_tokens=4)])
    assert completions[0].num_tokens >= 1
    assert main([*args[:-1], "--max-steps", "0"]) == 2
    assert "max steps must be in [1," in capsys.readouterr().err


def load_rows(records):
    from formats.rows import SFTConversation, SFTExample

    return [SFTConversation(**r) if "messages" in r else SFTExample(**r) for r in records]
