"""Training: our trainer vs TRL's (DPOTrainer for DPO, SFTTrainer for SFT), same model, data, settings.

Each trainer runs in its own subprocess, so its peak RSS (os.wait4's ru_maxrss for that child)
is its own. Both: one epoch over the same synthetic rows, same batch size and max length, fp32
(TRL's bf16 default off), AdamW, no gradient checkpointing (TRL's default turns it on; ours has
none). DPO: reference log-probs precomputed before training in both. SFT: loss on the completion
only and length-grouped batches in both (TRL: train_sampling_strategy="group_by_length"), no
packing. Steady-state tokens/s = non-padding tokens of steps 2..N / their time (step 1 is
warm-up; with length grouping steps differ in size, so SFT counts every step): ours from its
per-step `seconds`, TRL from the gaps between `on_step_end` events. End-to-end adds imports,
model load, the reference pass and saving.

Usage: python bench/training.py [--model smollm2-135m-instruct] [--pairs 64] [--batch-size 8] [--methods dpo,sft]
The default model is a small random Llama (4 layers, SmolLM2's tokenizer), a few minutes on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Synthetic text is drawn from these words; what matters for a benchmark is the token counts.
SENTENCES = (
    "a friend asked for honest advice about sharing money with family",
    "listen first then explain your boundary gently and clearly",
    "refuse to help with harm but offer a safe and fair choice",
    "respect consent keep promises apologise and report safety problems",
)
WORDS = [word for sentence in SENTENCES for word in sentence.split()]


def synthetic_pairs(count: int, prompt_words: int, reply_words: int, seed: int = 0) -> list[dict]:
    """Deterministic pairs with varied lengths (so padding to the batch's longest row matters)."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words))) + "."

    return [
        {
            "prompt": [{"role": "user", "content": "Question: " + text(prompt_words)}],
            "chosen": [{"role": "assistant", "content": text(reply_words)}],
            "rejected": [{"role": "assistant", "content": text(reply_words)}],
            "score_chosen": 8.0,
            "score_rejected": 3.0,
            "source": "bench",
            "meta": {"index": i},
        }
        for i in range(count)
    ]


def synthetic_sft(pairs: list[dict]) -> list[dict]:
    """The pairs' prompts and chosen replies as SFT rows (the `sft` export's format)."""
    return [{"prompt": p["prompt"], "completion": p["chosen"], "meta": p["meta"]} for p in pairs]


def build_small_llama(path: Path) -> str:
    from agents.random_model import build_random_llama

    return build_random_llama(path, hidden_size=256, intermediate_size=768, layers=4, max_positions=2048)


def epoch_tokens(method: str, model: str, data_file: Path) -> tuple[int, float]:
    """Non-padding tokens one epoch processes (DPO: chosen and rejected rows), and mean per row."""
    from transformers import AutoTokenizer

    from agents.registry import resolve
    from align import load_pairs, load_sft, tokenize_pairs, tokenize_sft

    tokenizer = AutoTokenizer.from_pretrained(resolve(model))
    if method == "sft":
        lengths = [e.length for e in tokenize_sft(load_sft(data_file), tokenizer, max_length=1 << 30)]
    else:
        pairs = tokenize_pairs(load_pairs(data_file), tokenizer, max_length=1 << 30)
        lengths = [2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    return sum(lengths), sum(lengths) / len(lengths)


# -- workers (each in its own process) --------------------------------------------------------


MAX_LENGTH = 1 << 20  # no truncation in either trainer (TRL: max_length=None)


def run_ours(args) -> dict:
    from align import METHODS, train

    rows = []
    method = METHODS[args.method]
    lr = 1e-6 if args.method == "dpo" else 2e-5
    config = method.config(
        lr=lr, batch_size=args.batch_size, epochs=1, warmup_ratio=0.0, max_length=MAX_LENGTH, save_steps=1 << 20
    )
    train(method, args.data_file, args.model, args.out, config, callbacks=[rows.append])
    return {"step_seconds": [row["seconds"] for row in rows], "loss": rows[-1]["loss"]}


def run_trl(args) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from agents.backends.hf import load_model_and_tokenizer

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends = []

        def on_train_begin(self, *_, **__):
            self.ends.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())

    model, tokenizer = load_model_and_tokenizer(args.model, device="cpu", dtype="float32")
    clock = StepClock()
    common = {
        "output_dir": args.out,
        "per_device_train_batch_size": args.batch_size,
        "num_train_epochs": 1,
        "lr_scheduler_type": "linear",
        "max_length": None,
        "gradient_checkpointing": False,
        "bf16": False,
        "use_cpu": not torch.cuda.is_available(),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
    }
    if args.method == "dpo":
        trainer_class, config = DPOTrainer, DPOConfig(learning_rate=1e-6, precompute_ref_log_probs=True, **common)
    else:
        config = SFTConfig(learning_rate=2e-5, train_sampling_strategy="group_by_length", **common)
        trainer_class = SFTTrainer
    dataset = load_dataset("json", data_files=args.data_file, split="train").remove_columns("meta")
    trainer = trainer_class(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock]
    )
    trainer.train()
    trainer.save_model(args.out)
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    return {
        "step_seconds": gaps,
        "loss": [log["loss"] for log in trainer.state.log_history if "loss" in log][-1],
    }


WORKERS = {"ours": run_ours, "trl": run_trl}


def spawn(worker: str, method: str, model: str, data_file: Path, out: Path, batch_size: int) -> dict:
    """Run one worker in a fresh process; add its wall time and peak RSS (os.wait4: this child only)."""
    command = [sys.executable, __file__, "--worker", worker, "--method", method, "--model", model]
    command += ["--batch-size", str(batch_size), "--data-file", str(data_file), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        process.stdout.close()
        if process.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{worker} worker failed:\n{log.read()[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}  # Linux: KiB


def steady_tokens_per_second(result: dict, tokens: int, steps: int, skip_first: bool) -> float:
    """Steps 2..N (step 1 warms up) when every step carries ~tokens/steps tokens; else all steps."""
    timed = result["step_seconds"][1:] if skip_first else result["step_seconds"]
    return tokens / steps * len(timed) / sum(timed)


def summarise(runs: list[dict], tokens: int, steps: int, skip_first: bool) -> dict:
    """Best of the repeats: other load on the machine only ever slows a run down."""
    return {
        "steady tokens/s": max(steady_tokens_per_second(r, tokens, steps, skip_first) for r in runs),
        "mean step seconds": min(sum(r["step_seconds"]) / len(r["step_seconds"]) for r in runs),
        "end-to-end seconds": min(r["seconds"] for r in runs),
        "peak RSS MiB": max(r["peak_rss_mib"] for r in runs),
        "last-step loss": runs[-1]["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="alias/path (default: a small random Llama)")
    parser.add_argument("--pairs", type=int, default=64, help="rows (pairs; SFT: their prompts + chosen)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-words", type=int, default=60)
    parser.add_argument("--reply-words", type=int, default=80)
    parser.add_argument("--methods", default="dpo,sft", help="comma-separated: dpo, sft")
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate the trainers N times, keep the best"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--data-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = args.model or build_small_llama(scratch / "small-llama")
        pairs = synthetic_pairs(args.pairs, args.prompt_words, args.reply_words)
        rows = {"dpo": pairs, "sft": synthetic_sft(pairs)}
        steps = -(-args.pairs // args.batch_size)
        for method in args.methods.split(","):
            data_file = scratch / f"{method}.jsonl"
            data_file.write_text("".join(json.dumps(row) + "\n" for row in rows[method]))
            tokens, per_row = epoch_tokens(method, model, data_file)
            runs = {"ours": [], "trl": []}
            for repeat in range(args.repeats):
                for name, results in runs.items():
                    out = scratch / f"{method}-{name}-{repeat}"
                    results.append(spawn(name, method, model, data_file, out, args.batch_size))
            report(method, args, runs, tokens, per_row, steps)


def report(method: str, args, runs: dict, tokens: int, per_row: float, steps: int) -> None:
    ours, trl = (summarise(runs[name], tokens, steps, skip_first=method == "dpo") for name in ("ours", "trl"))
    what = "prompt x2 + both replies" if method == "dpo" else "prompt + reply, every step timed"
    setting = "reference precomputed in both" if method == "dpo" else "completion-only loss, length-grouped in both"
    print(
        f"\n{method.upper()}, model={args.model or 'small random Llama (4x256, vocab 49k)'}, rows={args.pairs}, "
        f"batch={args.batch_size}, steps={steps}, {per_row:.0f} tokens/row ({what}), "
        f"fp32, {setting}, best of {args.repeats}"
    )
    print(f"{'':22}{'ours':>12}{'TRL':>12}{'ours/TRL':>10}")
    for label, fmt in [
        ("steady tokens/s", "{:,.0f}"),
        ("mean step seconds", "{:.3f}"),
        ("end-to-end seconds", "{:.1f}"),
        ("peak RSS MiB", "{:,.0f}"),
    ]:
        print(
            f"{label:22}{fmt.format(ours[label]):>12}{fmt.format(trl[label]):>12}{ours[label] / trl[label]:>9.2f}x"
        )
    print(f"last-step loss: ours {ours['last-step loss']:.4f}, TRL {trl['last-step loss']:.4f}")


if __name__ == "__main__":
    main()
