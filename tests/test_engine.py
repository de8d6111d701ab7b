"""The engine on a real tiny hf backend: producers, one call per backend group per step, typed
records of any registered kind resuming exactly, and replicas sharing calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_simulation import SCENARIO

from agents.backends import GenerationRequest
from agents.backends.hf import HFBackend
from agents.engine import Generate, NextToken, Scheduler, Score, first_completion, sampled
from agents.memory import Encoder
from sandbox import records
from sandbox.context import replay_or_run
from sandbox.errors import RunError
from sandbox.records import Phase, RoundRecord, Step, register_kind
from sandbox.simulation import Simulation, plan_worlds
from sandbox.store import RunStore
from scenarios import load_scenario

USER = ({"role": "user", "content": "Say something kind."},)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir)


def request(seed: int) -> GenerationRequest:
    return GenerationRequest(USER, temperature=1.0, max_new_tokens=5, seed=seed)


def talker(backend, seeds: list[int], digits: bool):
    """A producer: generate for each seed, then (optionally) read a digit after each reply."""
    outputs = yield [Generate(backend, request(seed)) for seed in seeds]
    texts = [first_completion(c).text for c in outputs]
    if not digits:
        return texts, None
    distributions = yield [NextToken(backend, (*USER, {"role": "assistant", "content": t}), ("1", "2")) for t in texts]
    return texts, distributions


def test_scheduler_merges_all_producers_into_one_call_per_backend_per_step(backend, tiny_model_dir):
    other = HFBackend(tiny_model_dir)  # a second loaded model: its ops get their own call
    scheduler = Scheduler()
    calls_before = backend.stats.calls, other.stats.calls
    results = scheduler.run([
        talker(backend, [1, 2], digits=True),
        talker(backend, [3], digits=True),
        talker(other, [4, 5], digits=False),
        talker(backend, [6], digits=False),
    ])
    # Step 1: one generate call per backend; step 2: one next-token call (on `backend` only).
    assert (backend.stats.calls - calls_before[0], other.stats.calls - calls_before[1]) == (1, 1)
    assert scheduler.steps == 2
    stats = {(phase, model): (s.calls, s.requests) for (phase, model), s in scheduler.stats.items()}
    # Both backends load the same directory, so they share a model name: 3 calls, 4 + 2 + 3 requests.
    assert stats == {("unlabelled", backend.model_name): (3, 9)}
    # Each producer got its own results: the same as asking for its requests alone.
    alone = [first_completion(c).text for c in backend.generate([request(s) for s in (1, 2, 3, 6)])]
    assert [results[0][0], results[1][0], results[3][0]] == [alone[:2], alone[2:3], alone[3:]]
    assert results[2][0] == [first_completion(c).text for c in other.generate([request(4), request(5)])]
    assert all(set(d) == {"1", "2"} for d in results[0][1] + results[1][1])


def test_sampling_outside_a_run_is_one_scheduled_call(backend):
    calls = backend.stats.calls
    texts = [[c.text for c in completions] for completions in sampled(backend, [request(1), request(2)])]
    assert backend.stats.calls - calls == 1
    assert texts == [[c.text for c in completions] for completions in backend.generate([request(1), request(2)])]


def test_empty_yields_wait_a_step_and_score_ops_batch(backend):
    def waits_then_scores():
        assert (yield []) == []
        return (yield [Score(backend, USER, "Hello there."), Score(backend, USER, "Hi.")])

    def scores_now():
        return (yield [Score(backend, USER, "Hello there.")])

    scheduler = Scheduler()
    late, early = scheduler.run([waits_then_scores(), scores_now()])
    assert scheduler.steps == 2  # the waiting producer's score is not merged into step 1
    assert late[0] == pytest.approx(early[0]) and len(late[1]) > 0
    assert all(value <= 0 for value in late[0] + late[1])


class ProbeRecord(RoundRecord):
    """A record kind only this test knows: the store must resume it without any code for it."""

    text: str
    note: str | None = None  # set on some records only: unset fields must round-trip unwritten


def probe_protocol(store, backend, rounds: int):
    for index in range(rounds):
        step = Step(index, Phase("probe", index))

        def make(index=index, step=step):
            (completions,) = yield [Generate(backend, request(100 + index))]
            extra = {"note": "even"} if index % 2 == 0 else {}
            return [ProbeRecord(id=f"probe/{index}", round=index, phase=str(step.phase),
                                text=first_completion(completions).text, **extra)]

        yield from replay_or_run(store, step, make)


@pytest.fixture
def probe_kind(monkeypatch):
    monkeypatch.setattr(records, "_KINDS", dict(records._KINDS))  # registered for this test only
    register_kind("probes", ProbeRecord)


def test_a_registered_test_only_kind_resumes_exactly(probe_kind, backend, tmp_path):
    reference = RunStore.open(tmp_path / "reference", {}, resume=False).world("w")
    Scheduler().run([probe_protocol(reference, backend, 3)])
    full = (reference.root / "probes.jsonl").read_text()
    assert '"note": "even"' in full and full.count('"note"') == 2

    partial = RunStore.open(tmp_path / "partial", {}, resume=False).world("w")
    Scheduler().run([probe_protocol(partial, backend, 2)])
    with (partial.root / "probes.jsonl").open("a") as handle:  # a crash: an unmarked record, a torn line
        handle.write(full.splitlines()[2] + "\n" + '{"id": "pro')
    partial.release()  # the crashed writer's lock goes with it
    resumed = RunStore(tmp_path / "partial").world("w")
    scheduler = Scheduler()
    scheduler.run([probe_protocol(resumed, backend, 3)])
    assert (partial.root / "probes.jsonl").read_text() == full
    assert sum(s.requests for s in scheduler.stats.values()) == 1  # rounds 0 and 1 replayed, not rerun
    assert [r.text for r in resumed.records("probes")] == [json.loads(line)["text"] for line in full.splitlines()]


def test_replicas_share_one_call_per_phase_per_model(tiny_model_dir, tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(SCENARIO.format(model=tiny_model_dir))
    encoder = Encoder("minilm-l6")
    worlds = plan_worlds([load_scenario(scenario)], replicas=4)
    assert [w.name for w in worlds] == ["tiny-r0", "tiny-r1", "tiny-r2", "tiny-r3"]
    assert len({w.seed for w in worlds}) == 4
    sim = Simulation(worlds, tmp_path / "run", rounds=1, encoder=encoder, show_progress=False)
    manifest = sim.run()
    (model,) = {m for models in manifest["phases"].values() for m in models} - {"minilm-l6"}
    calls = {phase: models[model]["calls"] for phase, models in manifest["phases"].items()}
    # One round: draft, revise and observe once; rate-0 and rate-1 each a reason call and a digit call.
    assert calls == {"draft": 1, "rate": 4, "revise": 1, "observe": 1}
    # The verifiable judges of all four worlds embed their answers and references in one pass.
    assert manifest["phases"]["observe"]["minilm-l6"] == {**manifest["phases"]["observe"]["minilm-l6"], "calls": 1}
    assert manifest["phases"]["draft"][model]["requests"] == 4 * 4  # four worlds x four agents
    assert set(manifest["worlds"]) == {w.name for w in worlds}
    assert all(w["rounds_completed"] == 1 for w in manifest["worlds"].values())
    # Each world's memory holds each agent's final answer, in exact (flat) indexes at this size.
    assert all(w["memory"] == {"items": 4, "index_kinds": {"flat": 4}, "flat_limit": 4096}
               for w in manifest["worlds"].values())
    # Batching changes nothing but float rounding (padding): a replica run alone makes the same records.
    alone = Simulation([worlds[2]], tmp_path / "alone", rounds=1, encoder=encoder, show_progress=False,
                       pool=sim.pool)
    alone.run()
    for kind in ("answers", "ratings", "scores"):
        assert_same_records(tmp_path / "alone/worlds/tiny-r2" / f"{kind}.jsonl",
                            tmp_path / "run/worlds/tiny-r2" / f"{kind}.jsonl")


def assert_same_records(a: Path, b: Path) -> None:
    rows_a, rows_b = ([json.loads(line) for line in p.read_text().splitlines()] for p in (a, b))
    assert len(rows_a) == len(rows_b) > 0
    for row_a, row_b in zip(rows_a, rows_b):
        assert row_a.keys() == row_b.keys()
        for key, value in row_a.items():
            if isinstance(value, float):
                assert value == pytest.approx(row_b[key], rel=1e-5), key
            else:
                assert value == row_b[key], key


def test_two_scenarios_in_one_command_share_calls_and_export_together(tiny_model_dir, tmp_path, capsys):
    from socialign.cli import main

    files = []
    for name in ("alpha", "beta"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(SCENARIO.format(model=tiny_model_dir).replace("name: tiny", f"name: {name}"))
        files.append(str(path))
    out = tmp_path / "run"
    assert main(["simulate", files[0], files[0], "--out", str(out), "--quiet"]) == 2
    assert "given twice" in capsys.readouterr().err and not out.exists()
    assert main(["simulate", *files, "--out", str(out), "--rounds", "1", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["worlds"]) == {"alpha-r0", "beta-r0"}
    assert {phase: sum(m["calls"] for m in models.values()) for phase, models in manifest["phases"].items()} == {
        "draft": 1, "rate": 4, "revise": 1, "observe": 2}  # observe: the observer call and one embedding pass
    assert main(["export", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "export" / "ratings.jsonl").read_text().splitlines()]
    assert {row["meta"]["id"].split("/")[0] for row in rows} == {"alpha-r0", "beta-r0"}
    assert main(["inspect", str(out)]) == 0
    assert "backend calls per phase" in capsys.readouterr().out


def test_a_world_has_one_writer_at_a_time(tmp_path, monkeypatch):
    from sandbox import store as store_module

    monkeypatch.setattr(store_module, "LOCK_WAIT_SECONDS", 0.2)
    run = RunStore.open(tmp_path / "run", {}, resume=False)
    writer = run.world("w")
    with pytest.raises(RunError, match="another process is writing this world"):
        run.world("w")
    assert run.world("w", repair=False).done == set()  # readers (export, inspect) need no lock
    writer.release()
    run.world("w").release()
