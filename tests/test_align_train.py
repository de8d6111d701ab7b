"""The preference trainer end to end on the tiny Llama: learning, outputs, LoRA, resume, TRL format."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from test_align_data import write_pairs
from transformers import AutoModelForCausalLM, AutoTokenizer

from align import DataError, DPOConfig, LoraSettings, load_pairs, train_dpo


class Interrupted(Exception):
    """Stands in for a kill: raised by a callback after some optimizer steps."""


def interrupt_after(step: int):
    def callback(row: dict) -> None:
        if row["step"] == step:
            raise Interrupted

    return callback


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.jsonl")


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, pairs_file, tmp_path_factory):
    """One full fine-tuning run shared by the tests that inspect its outputs."""
    config = DPOConfig(lr=1e-3, batch_size=2, grad_accum=2, max_steps=20, warmup_ratio=0.0, save_steps=8)
    return train_dpo(pairs_file, tiny_model_dir, tmp_path_factory.mktemp("runs") / "dpo", config)


def test_dpo_learns_the_fixed_preferences(dpo_run):
    history = dpo_run.history
    assert [row["step"] for row in history] == list(range(1, 21))
    # At step 1 the policy is the reference: the precomputed reference log-probs are right.
    assert history[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-4)
    assert history[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["rewards/accuracy"] == 1.0
    assert history[-1]["rewards/margin"] > 0
    expected = {
        "step",
        "epoch",
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margin",
        "rewards/accuracy",
    }
    assert expected | {"lr", "tokens_per_second", "seconds"} <= set(history[0])
    assert history[-1]["epoch"] == 20.0  # 4 pairs = 2 micro-batches of 2 = one step per epoch


def test_the_sft_weight_adds_the_chosen_nll_and_keeps_chosen_replies_likely(dpo_run, tiny_model_dir, pairs_file,
                                                                             tmp_path):
    config = DPOConfig(lr=1e-3, batch_size=2, grad_accum=2, max_steps=20, warmup_ratio=0.0, save_steps=20,
                       sft_weight=1.0)
    history = train_dpo(pairs_file, tiny_model_dir, tmp_path / "rpo", config).history
    # At step 1 the preference term is log 2 in both runs; the rest is the tiny model's chosen NLL (~ln vocab).
    assert history[0]["loss"] - dpo_run.history[0]["loss"] > 3.0
    assert history[-1]["rewards/chosen"] > dpo_run.history[-1]["rewards/chosen"]


def test_outputs_are_written(dpo_run):
    out = dpo_run.out_dir
    assert dpo_run.model_dir == out
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == dpo_run.history
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = json.loads((out / "train_config.json").read_text())
    assert recorded["method"] == "dpo" and recorded["num_examples"] == 4
    assert recorded["config"]["max_steps"] == 20 and recorded["config"]["lora"] is None
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000020"]  # latest only


def test_saved_model_loads_with_plain_transformers_and_chats(dpo_run, tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(dpo_run.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(dpo_run.model_dir)
    assert tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Can you help me cheat?"}],
        add_generation_prompt=True,
        return_tensors="pt",
    )
    prompt_ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    output = model.generate(prompt_ids, max_new_tokens=6, do_sample=False)
    assert output.shape[1] > prompt_ids.shape[1]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(model.model.norm.weight, base.model.norm.weight)  # it did train


def test_output_directory_is_never_silently_reused(dpo_run, tiny_model_dir, pairs_file, tmp_path):
    config = DPOConfig(lr=1e-3, batch_size=2, grad_accum=2, max_steps=20, warmup_ratio=0.0, save_steps=8)
    with pytest.raises(DataError, match="already holds a training run"):
        train_dpo(pairs_file, tiny_model_dir, dpo_run.out_dir, config)
    changed = DPOConfig(lr=1e-3, batch_size=2, grad_accum=2, max_steps=20, warmup_ratio=0.0, beta=0.5)
    with pytest.raises(DataError, match=r"holds a different training run \(changed: beta\)"):
        train_dpo(pairs_file, tiny_model_dir, dpo_run.out_dir, changed, resume=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and holds no training run"):
        train_dpo(pairs_file, tiny_model_dir, tmp_path, config)


def test_lora_saves_an_adapter_and_a_merged_model(tiny_model_dir, pairs_file, tmp_path):
    from peft import AutoPeftModelForCausalLM

    config = DPOConfig(
        lr=5e-3, batch_size=4, max_steps=8, warmup_ratio=0.0, lora=LoraSettings(r=8, alpha=16, dropout=0.0)
    )
    result = train_dpo(pairs_file, tiny_model_dir, tmp_path / "lora", config)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.model_dir == tmp_path / "lora" / "merged"
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    assert not (tmp_path / "lora" / "model.safetensors").exists()  # the adapter only, not a base copy

    adapted = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora")
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert AutoTokenizer.from_pretrained(result.model_dir).chat_template
    ids = torch.tensor([[1, 4093, 198, 26843, 665, 2, 198, 1, 520, 9531, 198]])
    with torch.no_grad():
        adapted_logits, merged_logits = adapted(ids).logits, merged(ids).logits
        base_logits = base(ids).logits
    assert torch.allclose(adapted_logits, merged_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)


def test_resume_after_the_last_step_extends_the_run_exactly(tiny_model_dir, pairs_file, tmp_path):
    """max_steps reached (a checkpoint), then resumed to a larger max_steps = one uninterrupted run."""

    def config(max_steps):
        return DPOConfig(
            lr=1e-3,
            batch_size=2,
            max_steps=max_steps,
            save_steps=100,
            warmup_ratio=0.0,
            lr_scheduler="constant",
        )

    whole = train_dpo(pairs_file, tiny_model_dir, tmp_path / "whole", config(5))
    train_dpo(pairs_file, tiny_model_dir, tmp_path / "parts", config(3))
    ran = []
    resumed = train_dpo(
        pairs_file, tiny_model_dir, tmp_path / "parts", config(5), resume=True, callbacks=[ran.append]
    )
    assert [row["step"] for row in ran] == [4, 5]  # it did start from the checkpoint
    assert_same_weights(tmp_path / "whole" / "model.safetensors", tmp_path / "parts" / "model.safetensors")
    assert [row["step"] for row in resumed.history] == [1, 2, 3, 4, 5]
    assert [row["loss"] for row in resumed.history] == pytest.approx([row["loss"] for row in whole.history])

    # The same run resumed once it has finished: returned as it is, no step run, nothing saved again.
    weights = tmp_path / "parts" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = train_dpo(pairs_file, tiny_model_dir, tmp_path / "parts", config(5), resume=True, callbacks=[ran.append])
    assert (again.step, again.model_dir, len(ran)) == (5, resumed.model_dir, 2)
    assert weights.stat().st_mtime_ns == before
    assert [row["step"] for row in again.history] == [1, 2, 3, 4, 5]


def test_resume_after_a_kill_mid_epoch_matches_an_uninterrupted_run(tiny_model_dir, pairs_file, tmp_path):
    """Linear schedule with warmup, LoRA dropout (RNG state matters), checkpoint mid-epoch, work lost after it."""
    config = DPOConfig(
        lr=5e-3,
        batch_size=1,
        max_steps=6,
        save_steps=2,
        warmup_ratio=0.2,
        lora=LoraSettings(r=4, dropout=0.1),
    )
    train_dpo(pairs_file, tiny_model_dir, tmp_path / "whole", config)
    with pytest.raises(Interrupted):
        train_dpo(pairs_file, tiny_model_dir, tmp_path / "killed", config, callbacks=[interrupt_after(3)])
    assert [row["step"] for row in load_metrics(tmp_path / "killed")] == [1, 2, 3]
    ran = []
    resumed = train_dpo(
        pairs_file, tiny_model_dir, tmp_path / "killed", config, resume=True, callbacks=[ran.append]
    )
    assert [row["step"] for row in ran] == [3, 4, 5, 6]  # from the step-2 checkpoint
    assert [row["step"] for row in resumed.history] == [1, 2, 3, 4, 5, 6]  # step 3 redone, not duplicated
    for name in ("adapter_model.safetensors", "merged/model.safetensors"):
        assert_same_weights(tmp_path / "whole" / name, tmp_path / "killed" / name)


def test_settings_left_by_an_earlier_trainer_in_the_process_do_not_leak_in(tiny_model_dir, pairs_file, tmp_path):
    config = DPOConfig(lr=1e-3, batch_size=2, max_steps=2, warmup_ratio=0.0)
    train_dpo(pairs_file, tiny_model_dir, tmp_path / "before", config)
    AcceleratorState._reset_state()
    Accelerator(mixed_precision="bf16")  # what a TRL DPOTrainer run leaves (its DPOConfig defaults to bf16)
    train_dpo(pairs_file, tiny_model_dir, tmp_path / "after", config)
    assert_same_weights(tmp_path / "before" / "reference_logps.safetensors",
                        tmp_path / "after" / "reference_logps.safetensors")
    assert_same_weights(tmp_path / "before" / "model.safetensors", tmp_path / "after" / "model.safetensors")


def test_mixed_precision_bf16_autocasts_the_forward_pass_and_keeps_fp32_weights(tiny_model_dir, pairs_file,
                                                                                 tmp_path):
    """--mixed-precision bf16 (also on a CPU): the weights stay fp32 while the steps differ from fp32's."""
    config = DPOConfig(lr=1e-3, batch_size=2, max_steps=2, warmup_ratio=0.0)
    train_dpo(pairs_file, tiny_model_dir, tmp_path / "fp32", config)
    mixed = DPOConfig(lr=1e-3, batch_size=2, max_steps=2, warmup_ratio=0.0, mixed_precision="bf16")
    train_dpo(pairs_file, tiny_model_dir, tmp_path / "bf16", mixed)
    fp32, bf16 = load_file(tmp_path / "fp32" / "model.safetensors"), load_file(tmp_path / "bf16" / "model.safetensors")
    assert all(tensor.dtype == torch.float32 for tensor in bf16.values())
    assert any(not torch.equal(fp32[name], bf16[name]) for name in fp32)
    assert json.loads((tmp_path / "bf16" / "train_config.json").read_text())["config"]["mixed_precision"] == "bf16"


def test_exported_pairs_train_one_step_with_trl(tiny_model_dir, pairs_file, tmp_path):
    """The pairs format (with our extra fields) is TRL's conversational preference format."""
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    assert len(load_pairs(pairs_file)) == 4  # the very file our trainer accepts
    dataset = load_dataset("json", data_files=str(pairs_file), split="train")
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    output = trainer.train()
    assert trainer.state.global_step == 1
    assert output.training_loss == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the first step


def assert_same_weights(a, b) -> None:
    left, right = load_file(a), load_file(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.allclose(left[name], right[name], atol=1e-6), name


def load_metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
