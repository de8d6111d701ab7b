"""A protocol is one module plus its registration: a toy one, declared in this file, runs through
simulate -> export -> report while the driver, the exporter and the report know it only through
sandbox.protocol."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from agents.engine import Producer, immediate
from agents.memory import Encoder
from sandbox.context import RunContext
from sandbox.export import export_run
from sandbox.protocol import ROUND_END, Protocol, register, unregister
from sandbox.protocols import all_protocols, protocol_of
from sandbox.records import Phase, RoundRecord, Step, register_kind
from sandbox.report_html import Report, optional_rows, table
from sandbox.simulation import Simulation, plan_worlds
from sandbox.store import WorldStore
from scenarios import load_scenario
from socialign.report import build_report

NOTE = Phase("note")
SCENARIO = """\
name: toy-society
seed: 1
rounds: 2
questions: {{bank: social, per_round: 1}}
graph: {{generator: cycle}}
agents:
  - group: scribes
    count: 3
    persona: You write notes.
    model: {{name: "{model}"}}
memory: {{k: 0}}
"""


class NoteRecord(RoundRecord):
    agent: str
    text: str


register_kind("notes", NoteRecord)


def note_rounds(ctx: RunContext, rounds: int) -> Producer[None]:
    """Each round every agent writes a note (no model call), then the round ends."""
    for index in range(rounds):
        notes = [NoteRecord(id=ctx.record_id(index, agent.id), round=index, phase=str(NOTE), agent=agent.id,
                            text=f"{agent.id} was here in round {index}") for agent in ctx.world.agents]
        yield from ctx.step(Step(index, NOTE), partial(immediate, notes))
        yield from ctx.step(Step(index, ROUND_END), partial(immediate, []))


def note_rows(store: WorldStore) -> dict[str, list[dict]]:
    notes = store.records("notes")
    return {"notes": [{"agent": n.agent, "text": n.text} for n in notes]} if notes else {}


def notes_section(report: Report, root: Path) -> None:
    rows = optional_rows(root, "notes.jsonl")
    if rows is not None:
        report.add("notes", "Notes", table(["agent", "note"], [(r["agent"], r["text"]) for r in rows]))


NOTES = Protocol("notes", claims=lambda scenario: scenario.name == "toy-society", rounds=note_rounds,
                 phases_per_round=lambda scenario: 2, record_kinds=("notes",), export=note_rows, report=notes_section)


@pytest.fixture
def registered():
    register(NOTES)
    yield NOTES
    unregister(NOTES)


def test_a_registered_protocol_runs_exports_and_reports(registered, tiny_model_dir, tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(SCENARIO.format(model=tiny_model_dir))
    loaded = load_scenario(path)
    assert protocol_of(loaded.scenario) is NOTES and NOTES in all_protocols()
    run = tmp_path / "run"
    manifest = Simulation(plan_worlds([loaded]), run, encoder=Encoder("minilm-l6"), show_progress=False).run()
    assert manifest["rounds_completed"] == 2 and manifest["counts"] == {"notes": 6}

    counts = export_run(run)
    assert counts["notes"] == 6 and counts["pairs"] == 0
    rows = [json.loads(line) for line in (run / "export" / "notes.jsonl").read_text().splitlines()]
    assert rows[0] == {"agent": "scribes-0", "text": "scribes-0 was here in round 0"}

    sections = {anchor: body for anchor, _, body in build_report(run).sections}
    assert "scribes-2 was here in round 1" in sections["notes"]


def test_a_protocol_must_declare_registered_record_kinds():
    with pytest.raises(ValueError, match="record kind 'scribbles' is not registered"):
        register(Protocol("scribbles", claims=None, rounds=None, phases_per_round=lambda scenario: 0,
                          record_kinds=("scribbles",)))
    assert all(p.name != "scribbles" for p in all_protocols())


def test_an_unclaimed_scenario_runs_the_default_protocol(registered):
    assert protocol_of(load_scenario("quick").scenario).name == "back-scatter"
    assert protocol_of(load_scenario("mcts-social").scenario).name == "mcts"
