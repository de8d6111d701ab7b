"""The project's GPU path in one run on one GPU: hf backend, --replicas, DPO against TRL, SFT + LoRA.

On a random Llama of ~0.5B parameters built from a config (no weights travel: only the default
model's tokenizer files, carried in ``--tokenizer``), each part in its own process, killed after
``--cap`` seconds, its row printed as it finishes:

- ``build``: the random model, saved in fp32 (the trainers start from fp32 weights).
- ``generate``: the hf backend against raw ``model.generate`` on the same batched requests
  (bench/generation.py's, made distinct), same sampling (temperature, top_p, no top_k), raw
  with ``min_new_tokens = max_new_tokens``; tokens/s of each (best of ``repeats``, alternating),
  goal backend / generate >= 0.9.
- ``replicas``: one round of the built-in ``quick`` scenario (its agents, questions, budgets)
  with ``--replicas 4`` in one process against the same four worlds one after another
  (bench/simulation.py's ``timed_run``), goal <= 0.5. The sentence encoder is a random stand-in
  (a fixed unit vector per text): memory and the reference judge run, no encoder model loads.
- ``dpo``: the project's trainer against TRL's ``DPOTrainer`` (bench/training.py's workers: same
  pairs, batch, lengths, reference precomputed), both bf16 autocast from fp32 weights on a GPU
  (ours: accelerate's mixed precision, as ``accelerate launch --mixed_precision bf16`` sets it;
  TRL: ``bf16=True``), fp32 on CPU. Steady tokens/s (goal ours / TRL >= 1.0) and peak memory
  (GPU: ``torch.cuda.max_memory_allocated``; CPU: peak RSS; goal ours / TRL <= 1.0).
- ``sft``: ``accelerate launch --mixed_precision bf16 -m socialign.cli train --method sft --lora``
  for a few steps, then ``socialign chat`` reloads the merged model and answers.
- a last table: every row, with the device, torch version and date.

Without CUDA, ``--size tiny`` (the default there) runs it all in fp32 in about a minute
(tests/test_bench_scripts.py). Wheels and the GPU machine's command: bench/gpu_wheels.txt and
bench/gpu_run.sh; results: docs/benchmarks-gpu.md.

Usage: python bench/gpu.py [--size gpu|tiny] [--tokenizer build/gpu-tokenizer] [--cap 60]
       [--parts build,generate,replicas,dpo,sft] [--prepare]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("build", "generate", "replicas", "dpo", "sft")
CUDA = torch.cuda.is_available()
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}


@dataclasses.dataclass(frozen=True)
class Size:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    prompts: int  # generate: batched requests
    new_tokens: int  # generate: tokens per request
    repeats: int  # generate: best of
    round_tokens: int | None  # replicas: every generation budget of `quick` (None: the scenario's own)
    pairs: int  # dpo: pairs (sft: rows)
    batch: int
    prompt_words: int
    reply_words: int
    sft_steps: int


SIZES = {
    # 24 x 1024, MLP 5120, vocab 49,152 (tied): 0.49B parameters.
    "gpu": Size(1024, 5120, 24, 16, 4, prompts=64, new_tokens=128, repeats=3, round_tokens=None,
                pairs=128, batch=8, prompt_words=60, reply_words=80, sft_steps=8),
    "tiny": Size(64, 128, 2, 4, 2, prompts=4, new_tokens=8, repeats=1, round_tokens=8,
                 pairs=8, batch=4, prompt_words=8, reply_words=10, sft_steps=2),
}


# -- running the parts ----------------------------------------------------------------------


def run_capped(command: list[str], cap: float, env: dict | None = None) -> tuple[int | None, str, str, float]:
    """Run ``command`` in its own process group; kill the group after ``cap`` s (returncode None)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT, env=env or ENV,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read(), time.perf_counter() - started


class PartFailed(RuntimeError):
    pass


def worker(name: str, args, cap: float, env: dict | None = None) -> tuple[dict, float]:
    """Run ``gpu.py --worker name`` capped; its result is the JSON on its last stdout line."""
    command = [sys.executable, __file__, "--worker", name, "--size", args.size, "--model", args.model_dir,
               "--work", str(args.work), "--precision", args.precision, "--cap", str(cap)]
    code, out, err, seconds = run_capped(command, cap, env)
    if code is None:
        raise PartFailed(f"TIMEOUT: {name} killed after {cap:.0f} s")
    if code != 0:
        raise PartFailed(f"FAILED: {name} exited {code}: {last_error(err)}")
    return json.loads(out.strip().splitlines()[-1]), seconds


def last_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    print(stderr[-3000:], file=sys.stderr)  # the whole tail for whoever reads the log
    return lines[-1][:160] if lines else "(no output)"


# -- the random model -----------------------------------------------------------------------


def save_tokenizer(folder: Path) -> None:
    """The default model's tokenizer (with its chat template) from the project's registry, no weights."""
    from transformers import AutoTokenizer

    from agents.registry import DEFAULT_CHAT_MODEL, resolve

    AutoTokenizer.from_pretrained(resolve(DEFAULT_CHAT_MODEL)).save_pretrained(folder)


def build_model(tokenizer: Path, out: Path, size: Size) -> str:
    """agents.random_model's builder, with the tokenizer read from the carried folder instead of the registry."""
    from unittest import mock

    from agents import random_model

    with mock.patch.object(random_model, "resolve", lambda _name: str(tokenizer)):
        return random_model.build_random_llama(out, size.hidden, size.intermediate, size.layers, size.heads,
                                               size.kv_heads, max_positions=2048)


# -- workers: each runs in its own process --------------------------------------------------


def distinct_requests(size: Size):
    """bench/generation.py's requests, each prompt made distinct (no prompt pass to share)."""
    from generation import bench_requests

    return [dataclasses.replace(r, messages=[{"role": "user", "content": f"{r.messages[0]['content']} ({i})"}])
            for i, r in enumerate(bench_requests(size.prompts, size.new_tokens))]


def raw_generate(backend, requests) -> tuple[int, float]:
    """The same prompts, left-padded alike, through plain ``model.generate`` sampling every token."""
    started = time.perf_counter()
    ids, mask = backend._left_pad(backend.renderer.prompt_ids_many([(r.messages, r.prefix) for r in requests]))
    budget = requests[0].max_new_tokens
    with torch.inference_mode():
        output = backend.model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=requests[0].temperature,
            top_p=requests[0].top_p, top_k=0, max_new_tokens=budget, min_new_tokens=budget,
            pad_token_id=backend.tokenizer.pad_token_id,
        ).cpu()
    return (output.shape[1] - ids.shape[1]) * len(requests), time.perf_counter() - started


def work_generate(args, size: Size) -> dict:
    from generation import measure

    from agents.backends.hf import HFBackend

    deadline = time.perf_counter() + args.cap * 0.6
    backend = HFBackend(args.model)  # bf16 on CUDA, fp32 on CPU
    requests = distinct_requests(size)
    measure(backend, requests[:2], batched=True)  # first-call costs, both paths
    raw_generate(backend, requests[:2])
    best = {"backend": (0, math.inf), "generate": (0, math.inf)}
    for repeat in range(size.repeats):
        if repeat and time.perf_counter() > deadline:
            break
        for name, timed in (("backend", lambda: measure(backend, requests, batched=True)),
                            ("generate", lambda: raw_generate(backend, requests))):
            tokens, seconds = timed()
            if tokens / seconds > best[name][0] / best[name][1]:
                best[name] = (tokens, seconds)
    return {"dtype": str(backend.model.dtype).removeprefix("torch."), "rows": len(requests),
            **{f"{name}_{key}": value for name, (tokens, seconds) in best.items()
               for key, value in (("tokens", tokens), ("seconds", seconds))}}


class RandomEncoder:
    """Stands in for the sentence encoder (agents.memory.Encoder's interface): a fixed random unit
    vector per text, so memory and the reference judge run without loading an encoder model."""

    dim = 32

    def __init__(self, name: str) -> None:
        self.name = name  # the scenario's embedder name, so the simulation uses this one

    def encode(self, texts) -> np.ndarray:
        rows = [np.random.default_rng(int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big"))
                .standard_normal(self.dim) for t in texts]
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


def quick_round(model: str, size: Size, folder: Path) -> Path:
    """The built-in `quick` scenario, one round, every agent and observer on ``model``."""
    import yaml

    from scenarios.loader import BUILTIN_DIR

    scenario = yaml.safe_load((BUILTIN_DIR / "quick.yaml").read_text())
    scenario["rounds"] = 1
    for group in scenario["agents"]:
        group["model"] = {"name": model}
        if size.round_tokens:
            group["sampling"]["max_new_tokens"] = size.round_tokens
    scenario["observers"] = {**scenario.get("observers", {}), "model": {"name": model}}
    if size.round_tokens:
        scenario["backscatter"]["reason_tokens"] = max(8, size.round_tokens)
    path = folder / "quick-round.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def work_replicas(args, size: Size) -> dict:
    from simulation import timed_run

    from agents.backends import BackendPool, GenerationRequest
    from sandbox.simulation import models_of, plan_worlds
    from scenarios import load_scenario

    loaded = load_scenario(quick_round(args.model, size, args.work))
    encoder = RandomEncoder(loaded.scenario.memory.embedder)
    pool = BackendPool()
    for ref in models_of(plan_worlds([loaded])):  # load, and pay first-call costs, before timing
        pool.get(ref.backend, ref.name, **ref.options).generate(
            [GenerationRequest([{"role": "user", "content": "Hello"}], max_new_tokens=4)])
    worlds = plan_worlds([loaded], replicas=4)
    timed_run(worlds[:1], 1, pool, encoder)  # a whole round's first calls (rating, scoring), untimed
    together, manifest = timed_run(worlds, 1, pool, encoder)
    alone = [timed_run([world], 1, pool, encoder) for world in worlds]
    return {"together_s": together, "sequential_s": sum(s for s, _ in alone),
            "tokens_together": manifest["tokens_generated"],
            "tokens_sequential": sum(m["tokens_generated"] for _, m in alone)}


def work_dpo(args, size: Size, trainer: str) -> dict:
    """bench/training.py's worker for ``trainer`` on the pairs the parent wrote, plus its peak memory."""
    import training

    if trainer == "trl" and args.precision == "bf16":  # training.py's TRL worker runs fp32 (its CPU comparison)
        import trl

        config = trl.DPOConfig
        trl.DPOConfig = lambda **options: config(**{**options, "bf16": True})
    options = argparse.Namespace(method="dpo", batch_size=size.batch, model=args.model,
                                 data_file=str(args.work / "dpo.jsonl"), out=str(args.work / f"dpo-{trainer}"))
    result = training.WORKERS[trainer](options)
    from accelerate.state import AcceleratorState

    result["mixed_precision"] = AcceleratorState().mixed_precision  # what the trainer's Accelerator ran with
    if CUDA:
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return result


WORKERS = {
    "generate": work_generate,
    "replicas": work_replicas,
    "dpo-ours": lambda args, size: work_dpo(args, size, "ours"),
    "dpo-trl": lambda args, size: work_dpo(args, size, "trl"),
}


# -- the parts, in the parent ---------------------------------------------------------------


def part_build(args, size: Size) -> dict:
    from safetensors import safe_open
    from transformers import AutoConfig

    started = time.perf_counter()
    args.model_dir = build_model(args.tokenizer, args.work / "model", size)
    params = 0
    for path in Path(args.model_dir).glob("*.safetensors"):
        with safe_open(path, "pt") as weights:
            names = weights.keys()
            params += sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    config = AutoConfig.from_pretrained(args.model_dir)
    return {"seconds": time.perf_counter() - started, "goal": "-", "met": "-",
            "result": f"random Llama, {params / 1e6:,.1f}M params ({config.num_hidden_layers} x {config.hidden_size}, "
                      f"vocab {config.vocab_size:,}, tied), fp32 on disk"}


def part_generate(args, size: Size) -> dict:
    r, seconds = worker("generate", args, args.cap)
    backend, raw = r["backend_tokens"] / r["backend_seconds"], r["generate_tokens"] / r["generate_seconds"]
    return {"seconds": seconds, "goal": "ratio >= 0.9", "met": yes(backend / raw >= 0.9),
            "result": f"backend {backend:,.0f} tok/s / generate {raw:,.0f} tok/s = {backend / raw:.2f} "
                      f"({r['rows']} rows x {size.new_tokens} tokens, {r['dtype']}; tokens "
                      f"{r['backend_tokens']} vs {r['generate_tokens']})"}


def part_replicas(args, size: Size) -> dict:
    r, seconds = worker("replicas", args, args.cap)
    ratio = r["together_s"] / r["sequential_s"]
    same = "same tokens" if r["tokens_together"] == r["tokens_sequential"] else "TOKENS DIFFER"
    return {"seconds": seconds, "goal": "ratio <= 0.5", "met": yes(ratio <= 0.5),
            "result": f"--replicas 4 {r['together_s']:.1f} s / 4 sequential {r['sequential_s']:.1f} s = {ratio:.2f} "
                      f"(quick, 1 round; {r['tokens_together']:,} tokens, {same})"}


def part_dpo(args, size: Size) -> dict:
    import training

    data = args.work / "dpo.jsonl"
    pairs = training.synthetic_pairs(size.pairs, size.prompt_words, size.reply_words)
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    tokens, _ = training.epoch_tokens("dpo", args.model_dir, data)
    steps = -(-size.pairs // size.batch)
    mixed = "bf16" if args.precision == "bf16" else "no"
    ours, ours_s = worker("dpo-ours", args, args.cap, {**ENV, "ACCELERATE_MIXED_PRECISION": mixed})
    trl, trl_s = worker("dpo-trl", args, args.cap)
    rate = {name: training.steady_tokens_per_second(r, tokens, steps, skip_first=True)
            for name, r in (("ours", ours), ("trl", trl))}
    speed, memory = rate["ours"] / rate["trl"], ours["peak_memory_mib"] / trl["peak_memory_mib"]
    what = "GPU allocated" if CUDA else "RSS"
    return {"seconds": ours_s + trl_s, "goal": "tok/s >= 1.0, mem <= 1.0", "met": yes(speed >= 1.0 and memory <= 1.0),
            "result": f"ours {rate['ours']:,.0f} / TRL {rate['trl']:,.0f} tok/s = {speed:.2f}; peak {what} "
                      f"{ours['peak_memory_mib']:,.0f} / {trl['peak_memory_mib']:,.0f} MiB = {memory:.2f} "
                      f"({size.pairs} pairs, batch {size.batch}, mixed precision: ours {ours['mixed_precision']}, "
                      f"TRL {trl['mixed_precision']})"}


def part_sft(args, size: Size) -> dict:
    import training

    data = args.work / "sft.jsonl"
    rows = training.synthetic_sft(training.synthetic_pairs(size.pairs, size.prompt_words, size.reply_words))
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    precision = "bf16" if args.precision == "bf16" else "no"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", precision, "--dynamo_backend", "no", "-m", "socialign.cli", "train",
               "--method", "sft", "--data", str(data), "--model", args.model_dir, "--out", str(args.work / "sft"),
               "--lora", "--max-steps", str(size.sft_steps), "--batch-size", str(size.batch)]
    code, out, err, train_s = run_capped(command, args.cap)
    if code is None:
        raise PartFailed(f"TIMEOUT: accelerate launch ... train killed after {args.cap:.0f} s")
    found = re.search(r"trained (\d+) steps \((.*)\); model: (\S+)", out)
    if code != 0 or not found:
        raise PartFailed(f"FAILED: accelerate launch ... train exited {code}: {last_error(err)}")
    steps, metrics, merged = found.groups()
    prompt = "Give one tip for a calm morning."
    chat = [sys.executable, "-m", "socialign.cli", "chat", prompt, "--model", merged, "--max-new-tokens", "16"]
    code, out, err, chat_s = run_capped(chat, args.cap)
    if code is None:
        raise PartFailed(f"TIMEOUT: socialign chat killed after {args.cap:.0f} s")
    reply = out.split(f"> {prompt}\n", 1)[-1].split("\n[", 1)[0].strip()
    if code != 0 or not reply:
        raise PartFailed(f"FAILED: socialign chat exited {code}: {last_error(err)}")
    return {"seconds": train_s + chat_s, "goal": "reloads, chats", "met": "yes",
            "result": f"{steps} LoRA steps, accelerate launch --mixed_precision {precision} ({train_s:.0f} s, {metrics}); "
                      f"merged model chats ({chat_s:.0f} s): {reply[:40]!r}"}


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


# -- main -----------------------------------------------------------------------------------


def row(part: str, r: dict) -> str:
    return f"{part:<9}{r['seconds']:>8.1f}  {r['goal']:<25}{r['met']:<5}{r['result']}"


HEADER = f"{'part':<9}{'seconds':>8}  {'goal':<25}{'met':<5}result"


def device_line(name: bool = True) -> str:
    """Device, versions and date; the GPU's name only once the parts are done (it starts CUDA here)."""
    import transformers

    device = (f"{torch.cuda.get_device_name(0) if name else 'a GPU'} (cuda)") if CUDA else "CPU (no CUDA)"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"device: {device} | torch {torch.__version__} | transformers {transformers.__version__} | {date}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="gpu" if CUDA else "tiny",
                        help="model and workload sizes (default: gpu with CUDA, tiny without)")
    parser.add_argument("--tokenizer", type=Path, default=ROOT / "build" / "gpu-tokenizer",
                        help="the default model's tokenizer files; made here from the registry if absent")
    parser.add_argument("--prepare", action="store_true", help="only write the tokenizer folder, then stop")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16" if CUDA else "fp32",
                        help="training: bf16 autocast from fp32 weights, or fp32 (default: bf16 with CUDA)")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds before a part's process is killed")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = SIZES[args.size]
    asked = set(args.parts.split(","))
    if asked - set(PARTS):
        parser.error(f"unknown part(s): {', '.join(sorted(asked - set(PARTS)))}")
    if args.worker:
        args.model_dir = args.model
        print(json.dumps(WORKERS[args.worker](args, size)))
        return
    if not (args.tokenizer / "tokenizer_config.json").is_file():
        from agents.registry import ModelNotAvailable

        try:
            save_tokenizer(args.tokenizer)
        except ModelNotAvailable as error:
            parser.error(f"no tokenizer files in {args.tokenizer}, and none to make them from here ({error}): "
                         "run `python bench/gpu.py --prepare` where the default model is, and carry the folder")
        print(f"tokenizer files written to {args.tokenizer}", flush=True)
    if args.prepare:
        return
    parts = [p for p in PARTS if p in asked or p == "build"]  # every part needs the model
    with tempfile.TemporaryDirectory(prefix="socialign-gpu-") as scratch:
        args.work = args.work or Path(scratch)
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"{args.size} sizes, training {args.precision}, cap {args.cap:.0f} s per process, {device_line(False)}",
              flush=True)
        print(HEADER, flush=True)
        rows = {}
        for part in parts:
            started = time.perf_counter()
            try:
                rows[part] = globals()[f"part_{part}"](args, size)
            # One part's failure must not cost the others their rows.
            except (ArithmeticError, ImportError, LookupError, OSError, RuntimeError, TypeError, ValueError) as error:
                if not isinstance(error, PartFailed):
                    traceback.print_exc()
                rows[part] = {"seconds": time.perf_counter() - started, "goal": "-", "met": "-",
                              "result": str(error) if isinstance(error, PartFailed) else f"FAILED: {error!r}"}
            print(row(part, rows[part]), flush=True)
            if part == "build" and "model_dir" not in vars(args):
                break  # nothing else runs without the model
    print(f"\n== bench/gpu.py: {args.size} sizes, training {args.precision}, {device_line()}")
    print(HEADER)
    for part, r in rows.items():
        print(row(part, r))
    if any(r["result"].startswith(("FAILED", "TIMEOUT")) for r in rows.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
