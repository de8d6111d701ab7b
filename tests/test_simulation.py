"""Back-Scatter simulation on a tiny random model: phases, batching, resume, export, TRL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.memory import Encoder
from sandbox.errors import RunError
from sandbox.export import export_run
from sandbox.simulation import Simulation, plan_worlds
from scenarios import load_scenario
from socialign.cli import main

SCENARIO = """\
name: tiny
seed: 3
rounds: 2
questions: {{bank: social, per_round: 2}}
graph: {{generator: cycle}}
agents:
  - group: kind
    count: 2
    persona: You are kind.
    model: {{name: "{model}"}}
    sampling: {{temperature: 0.7, max_new_tokens: 8}}
  - group: blunt
    count: 2
    persona: You are blunt.
    model: {{name: "{model}"}}
    sampling: {{temperature: 1.0, top_p: 0.95, max_new_tokens: 6}}
observers: {{model: {{name: "{model}"}}}}
backscatter: {{peers: 2, max_revisions: 1, stop_at_mean_rating: 7.0, reason_tokens: 8}}
memory: {{k: 1, threshold: -1.0}}
export: {{pair_margin: 0.0}}
"""

RECORDS = ("answers.jsonl", "ratings.jsonl", "scores.jsonl")
WORLD = Path("worlds") / "tiny-r0"  # the one world of a single-scenario run


@pytest.fixture(scope="module")
def encoder():
    return Encoder("minilm-l6")


@pytest.fixture(scope="module")
def scenario_file(tiny_model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "tiny.yaml"
    path.write_text(SCENARIO.format(model=tiny_model_dir))
    return path


@pytest.fixture(scope="module")
def reference(scenario_file, encoder, tmp_path_factory) -> Simulation:
    """One uninterrupted run the other tests compare against (export files may be added to it)."""
    return simulate(scenario_file, tmp_path_factory.mktemp("reference") / "run", encoder)


def simulation(scenario_file, out, encoder, seed=None, replicas=None, **kwargs) -> Simulation:
    worlds = plan_worlds([load_scenario(scenario_file)], seed, replicas)
    return Simulation(worlds, out, encoder=encoder, show_progress=False, **kwargs)


def simulate(scenario_file, out, encoder, **kwargs) -> Simulation:
    sim = simulation(scenario_file, out, encoder, **kwargs)
    sim.run()
    return sim


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rounds_produce_every_phase_with_one_generate_call_each(reference):
    sim, run = reference, reference.store.root / WORLD
    answers = read(run / "answers.jsonl")
    ratings = read(run / "ratings.jsonl")
    scores = read(run / "scores.jsonl")
    # 4 agents x 2 rounds drafts; stop threshold 7.0 makes every rated agent revise once.
    drafts = [a for a in answers if a["version"] == 0]
    assert len(drafts) == 8
    revisions = [a for a in answers if a["version"] == 1]
    assert 0 < len(revisions) <= 8
    assert len(ratings) == 2 * (len(drafts) + len(revisions))  # 2 peers rate every version
    assert len(scores) == 2 * len(answers)  # 1 observer x 2 dimensions per version
    assert all(1 <= s["score"] <= 7 for s in scores)  # logprob ratings never fail to parse
    # Peers are graph neighbours (a 4-cycle: every node has exactly 2).
    world = sim.world("tiny-r0").world
    for rating in ratings:
        assert world.graph.has_edge(world.by_id[rating["agent"]].node, world.by_id[rating["rater"]].node)
    # Each generating phase is ONE backend call: per round draft, reasons x2, revision.
    (backend,) = sim.pool.backends()
    assert backend.stats.calls == 2 * 4
    # Round 2 drafts recall round 1's final answer of the same agent (threshold -1 keeps any).
    round2 = [a for a in drafts if a["round"] == 1]
    assert all(len(a["memories"]) == 1 for a in round2)
    manifest = json.loads((sim.store.root / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rounds_completed"] == 2
    verdicts = read(run / "verdicts.jsonl")  # the verifiable judges' verdict on every version
    assert sorted(v["answer_id"] for v in verdicts) == sorted(a["id"] for a in answers)
    assert all(set(v["judges"]) == {"decline", "reference"} and v["expected"] in {"decline", "answer"} for v in verdicts)
    assert manifest["counts"] == {"answers": len(answers), "ratings": len(ratings), "scores": len(scores),
                                  "verdicts": len(verdicts)}
    # Every world's answers of an observe phase share one embedding pass (per round, here one world).
    assert manifest["phases"]["observe"]["minilm-l6"]["calls"] == 2
    phases = {phase: models[backend.model_name] for phase, models in manifest["phases"].items()}
    assert set(phases) == {"draft", "rate", "revise", "observe"}
    assert phases["draft"]["tokens"] + phases["revise"]["tokens"] == sum(a["tokens"] for a in answers)
    assert manifest["tokens_generated"] == sum(p["tokens"] for p in phases.values())
    # Per round: draft 1 call, rate 2 per version (reasons, then the digits), revise 1, observe 1.
    assert {p: c["calls"] for p, c in phases.items()} == {"draft": 2, "rate": 8, "revise": 2, "observe": 2}
    assert phases["rate"]["requests"] == 2 * len(ratings) and phases["observe"]["requests"] == len(scores)


def test_same_seed_same_records_and_rerun_needs_resume(scenario_file, tmp_path, encoder, reference):
    first = reference.store.root
    simulate(scenario_file, tmp_path / "b", encoder)
    for name in RECORDS:
        assert (first / WORLD / name).read_text() == (tmp_path / "b" / WORLD / name).read_text()
    before = {name: (first / WORLD / name).read_text() for name in RECORDS}
    with pytest.raises(RunError, match="pass --resume"):
        simulation(scenario_file, first, encoder)
    with pytest.raises(RunError, match="different run"):
        simulation(scenario_file, first, encoder, seed=99)
    with pytest.raises(RunError, match="different run"):
        simulation(scenario_file, first, encoder, replicas=2)
    assert before == {name: (first / WORLD / name).read_text() for name in RECORDS}  # nothing damaged


def test_torn_writes_and_unmarked_phases_are_dropped_on_resume(scenario_file, tmp_path, encoder, reference):
    reference = reference.store.root / WORLD
    simulate(scenario_file, tmp_path / "damaged", encoder, rounds=1)
    damaged = tmp_path / "damaged" / WORLD
    # A crash mid-step: every kind has a record of round 2 with no marker, then a torn line.
    for name in RECORDS:
        extra = read(reference / name)[-1]
        with (damaged / name).open("a") as handle:
            handle.write(json.dumps(extra) + "\n" + '{"id": "torn')
    with (damaged / "progress.jsonl").open("a") as handle:
        handle.write('{"step": "1/dra')
    simulate(scenario_file, tmp_path / "damaged", encoder, resume=True, rounds=2)
    for name in RECORDS:
        assert (damaged / name).read_text() == (reference / name).read_text()


def test_kill_9_mid_run_then_resume_equals_uninterrupted(scenario_file, tmp_path, reference):
    reference = reference.store.root / WORLD
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "socialign.cli", "simulate", str(scenario_file), "--out", str(out), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # a loaded machine takes minutes to import torch and load
    progress = out / WORLD / "progress.jsonl"
    while time.monotonic() < deadline:  # kill once round 1 is partly done
        if progress.exists() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    markers = progress.read_text().splitlines()
    assert 3 <= len(markers) < 12, "the kill must land mid-run"
    resumed = subprocess.run([*command, "--resume"], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for name in RECORDS:
        assert (out / WORLD / name).read_text() == (reference / name).read_text()


def test_export_writes_trl_files_that_train_one_dpo_step(reference, tmp_path, tiny_model_dir, capsys):
    run = reference.store.root
    assert main(["export", str(run)]) == 0
    counts = {kind: len(read(run / "export" / f"{kind}.jsonl")) for kind in ("pairs", "ranked", "critiques", "sft")}
    assert all(count > 0 for count in counts.values()), counts
    pair = read(run / "export" / "pairs.jsonl")[0]
    assert pair["prompt"][0]["role"] == "user" and pair["chosen"][0]["role"] == "assistant"
    assert pair["score_chosen"] >= pair["score_rejected"] and pair["source"] in {"revision", "cross-agent"}
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "pairs ranked by mix" in out and "export filters:" in out and "dropped by filter" in out

    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("json", data_files=str(run / "export" / "pairs.jsonl"), split="train")
    dataset = dataset.select_columns(["prompt", "chosen", "rejected"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=1,
                       learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True, logging_steps=1)
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    result = trainer.train()
    assert result.global_step == 1
    changed = any(not (p.detach() == before[n]).all() for n, p in model.named_parameters())
    assert changed


def test_sft_and_ratings_load_with_datasets(reference):
    from datasets import load_dataset

    run = reference.store.root
    export_run(run)
    for kind in ("sft", "ratings", "ranked", "critiques"):
        dataset = load_dataset("json", data_files=str(run / "export" / f"{kind}.jsonl"), split="train")
        assert len(dataset) > 0


def test_shared_pool_loads_each_model_once(reference):
    assert len(reference.pool.backends()) == 1  # four agents and the observer share one loaded model


def test_cli_refuses_an_out_dir_holding_a_different_run(reference, scenario_file, capsys):
    run = reference.store.root
    before = {name: (run / WORLD / name).read_text() for name in RECORDS}
    code = main(["simulate", str(scenario_file), "--out", str(run), "--seed", "99", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "holds a different run" in err and len(err.strip().splitlines()) == 1
    assert before == {name: (run / WORLD / name).read_text() for name in RECORDS}


def test_a_groups_reply_prefix_starts_every_answer_and_the_model_continues_it(tiny_model_dir, tmp_path, encoder):
    from agents.backends import GenerationRequest
    from agents.backends.hf import HFBackend
    from agents.prompts import answer_messages
    from agents.seeding import derive_seed

    text = SCENARIO.format(model=tiny_model_dir).replace("memory: {k: 1, threshold: -1.0}", "memory: {k: 0}")
    text = text.replace("    persona: You are blunt.\n", "    persona: You are blunt.\n    reply_prefix: 'No, because'\n")
    path = tmp_path / "prefixed.yaml"
    path.write_text(text)
    simulate(path, tmp_path / "run", encoder)
    answers = read(tmp_path / "run" / WORLD / "answers.jsonl")
    blunt = [a for a in answers if a["group"] == "blunt"]
    assert blunt and all(a["text"].startswith("No, because") for a in blunt)
    assert not any(a["text"].startswith("No, because") for a in answers if a["group"] == "kind")
    # A draft is the prefix plus what the backend returns when asked to continue it.
    backend = HFBackend(tiny_model_dir)
    world_seed = derive_seed(3, "replica", 0)
    for draft in (a for a in blunt if a["version"] == 0):
        request = GenerationRequest(answer_messages("You are blunt.", draft["question"], []), prefix="No, because",
                                    temperature=1.0, top_p=0.95, max_new_tokens=6, seed=derive_seed(world_seed, draft["id"]))
        (completion,) = backend.generate([request])[0]
        assert draft["text"] == ("No, because" + completion.text).strip()
