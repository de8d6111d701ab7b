"""The self-play phase in a simulation on the tiny model: one call per op kind per step for all
agents, records and ratings, resume to the same records, exports with win rates and pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.memory import Encoder
from align.data import load_pairs
from sandbox.export import export_run
from sandbox.simulation import Simulation, plan_worlds
from scenarios import load_scenario
from socialign.report import build_report

SCENARIO = """\
name: sp
seed: 5
rounds: 2
questions: {{bank: social, per_round: 2}}
graph: {{generator: cycle}}
agents:
  - group: kind
    count: 2
    persona: You are kind.
    model: {{name: "{model}"}}
    sampling: {{temperature: 1.0, max_new_tokens: 6}}
  - group: blunt
    count: 2
    persona: You are blunt.
    model: {{name: "{model}"}}
    sampling: {{temperature: 1.0, top_p: 0.95, max_new_tokens: 6}}
observers: {{model: {{name: "{model}"}}, dimensions: [{{name: alignment, description: helpful and harmless}}]}}
backscatter: {{peers: 1, max_revisions: 0, reason_tokens: 8}}
memory: {{k: 0}}
selfplay: {{k: 3, judges: [observers, neighbours], neighbour_judges: 1, opponents: 1, verifiers: true, pair_margin: 0.0}}
export: {{pair_margin: 0.0}}
"""
WORLD = Path("worlds") / "sp-r0"


class CountingCalls:
    """Wraps the pool's backends' methods to log (method, batch size) per call: the real model runs."""

    def __init__(self, backend):
        self.calls: list[tuple[str, int]] = []
        for name in ("generate", "next_token_logprobs"):
            original = getattr(backend, name)

            def counted(prompts, *args, _original=original, _name=name, **kwargs):
                self.calls.append((_name, len(prompts)))
                return _original(prompts, *args, **kwargs)

            setattr(backend, name, counted)


@pytest.fixture(scope="module")
def encoder():
    return Encoder("minilm-l6")


@pytest.fixture(scope="module")
def scenario_file(tiny_model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "sp.yaml"
    path.write_text(SCENARIO.format(model=tiny_model_dir))
    return path


def simulation(scenario_file, out, encoder, **kwargs) -> Simulation:
    return Simulation(plan_worlds([load_scenario(scenario_file)]), out, encoder=encoder, show_progress=False, **kwargs)


@pytest.fixture(scope="module")
def run(scenario_file, encoder, tmp_path_factory):
    sim = simulation(scenario_file, tmp_path_factory.mktemp("run") / "run", encoder)
    (backend,) = sim.pool.backends() or [sim.backend(sim.specs[0].loaded.scenario.observers.model)]
    counting = CountingCalls(backend)
    sim.run()
    return sim, counting.calls


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_phase_batches_every_agent_into_one_call_per_op_kind_per_step(run):
    sim, calls = run
    k, agents = 3, 4
    pairs = k * (k - 1) // 2
    # Per round: draft, reason, digit, observe; then self-play: one generate (4 requests, n=K),
    # one next-token call with every comparison of every agent: (pairs + K opponents) x 2 orders
    # x 2 LM judges (the observer and one neighbour, the same model here).
    selfplay = [("generate", agents), ("next_token_logprobs", agents * (pairs + k) * 2 * 2)]
    per_round = [("generate", 4), ("generate", 4), ("next_token_logprobs", 4), ("next_token_logprobs", 4), *selfplay]
    assert calls == per_round * 2
    # The verifiers' embeddings: one Embed op per group, one encoder call per phase for all of them.
    (embedder,) = {model for phase, model in sim.scheduler.stats if phase == "selfplay" and "minilm" in model}
    embedded = sim.scheduler.stats[("selfplay", embedder)]
    assert (embedded.calls, embedded.requests) == (2, 2 * agents)  # 2 rounds
    manifest = json.loads((sim.store.root / "manifest.json").read_text())
    assert manifest["phases"]["selfplay"] and manifest["counts"]["selfplay"] == 2 * agents
    assert manifest["counts"]["selfplay_ratings"] == 2


def test_records_hold_samples_per_judge_win_rates_bias_and_matches(run):
    sim, _ = run
    records = read(sim.store.root / WORLD / "selfplay.jsonl")
    world = sim.world("sp-r0").world
    for record in records:
        assert len(record["samples"]) == len(record["tokens"]) == 3  # all K kept
        assert set(record["judges"]) == {"observers", "neighbours", "decline", "reference"}
        assert set(record["position_bias"]) == {"observers", "neighbours"}
        assert all(0 <= b["first_slot_rate"] <= 1 for b in record["position_bias"].values())
        # Every pair compared: in-group win rates average 1/2, for all judges and for each LM judge.
        assert sum(record["win_rates"]) / 3 == pytest.approx(0.5)
        assert sum(record["judges"]["observers"]) / 3 == pytest.approx(0.5)
        assert len(record["appropriate"]) == 3
        # Each sample met the nearest other agent that answered the same question.
        (opponent,) = {m["opponent"] for m in record["matches"]}
        assert [m["sample"] for m in record["matches"]] == [0, 1, 2]
        peers = [r for r in records if r["round"] == record["round"] and r["question_id"] == record["question_id"]]
        assert opponent in {r["agent"] for r in peers} - {record["agent"]}
        assert world.by_id[opponent]
    ratings = read(sim.store.root / WORLD / "selfplay_ratings.jsonl")
    assert [r["round"] for r in ratings] == [0, 1]
    for entry in ratings:
        read_ratings = [v for v in entry["ratings"].values() if v is not None]
        assert len(read_ratings) == 4 and sum(read_ratings) == pytest.approx(0.0, abs=1e-9)  # mean 0


def test_resume_after_a_lost_selfplay_step_reaches_the_same_records(run, scenario_file, encoder, tmp_path):
    sim, _ = run
    source = sim.store.root
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(source, copy)
    world = copy / WORLD
    # Forget the last self-play step: drop its marker (its records become unmarked and are dropped).
    progress = world.joinpath("progress.jsonl").read_text().splitlines()
    assert json.loads(progress[-2])["step"] == "1/selfplay"
    world.joinpath("progress.jsonl").write_text("\n".join(progress[:-2] + progress[-1:]) + "\n")
    resumed = simulation(scenario_file, copy, encoder, resume=True)
    resumed.run()
    for kind in ("selfplay", "selfplay_ratings", "answers", "scores"):
        assert world.joinpath(f"{kind}.jsonl").read_text() == (source / WORLD / f"{kind}.jsonl").read_text()


def test_export_gains_win_rates_judges_and_selfplay_pairs(run, tmp_path):
    sim, _ = run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(sim.store.root, copy)
    counts = export_run(copy)
    records = read(copy / WORLD / "selfplay.jsonl")
    ranked = [r for r in read(copy / "export" / "ranked.jsonl") if r["meta"].get("source") == "selfplay"]
    assert len(ranked) == len(records)
    for row, record in zip(ranked, records):
        assert len(row["responses"]) == len(row["win_rates"]) == 3
        assert set(row["judges"]) == set(record["judges"])
        rates = [w for w in row["win_rates"]]
        assert rates == sorted(rates, reverse=True)  # best first
        assert row["scores"] == row["win_rates"]
    pairs = [p for p in read(copy / "export" / "pairs.jsonl") if p["source"] == "selfplay"]
    assert counts["pairs"] >= len(pairs) > 0
    by_id = {r["id"]: r for r in records}
    for pair in pairs:
        record = by_id[pair["meta"]["record"]]
        chosen, rejected = pair["meta"]["chosen"]["sample"], pair["meta"]["rejected"]["sample"]
        assert pair["chosen"][0]["content"] == record["samples"][chosen]
        assert pair["margin"] == pytest.approx(record["win_rates"][chosen] - record["win_rates"][rejected], abs=1e-4)
        assert pair["margin"] > 0
        assert record["appropriate"][chosen] is not False  # the verifiers' veto
    assert len(load_pairs(copy / "export" / "pairs.jsonl")) == counts["pairs"]  # what DPO reads, margin included
    shown = {anchor: body for anchor, _, body in build_report(copy).sections}["pairs"]  # self-play pairs too
    assert f"selfplay {len(pairs)}" in shown
