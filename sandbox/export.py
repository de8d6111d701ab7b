"""A run's records → export/<kind>.jsonl in TRL's conversational formats (see DESIGN.md), with
export/filters.json (how many candidate rows each filter dropped) and a dataset card.

Each world's Back-Scatter rows come from its ``Exporter`` (sandbox.world_export); every
protocol adds its own (sandbox.protocol: self-play's prompts, the search's step pairs). Per
scenario: SFT rows of the bank's reference answers for a seeded sample of training questions
("reference"); SPIN rows of the same sample's references (or, in a bank without references,
each question's best allowed revision) as ``real`` beside an agent's draft as ``generated``.
Every row of a file a trainer reads is checked against its type (formats.rows) before writing.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from agents.files import write_atomic
from agents.seeding import derive_seed
from formats.rows import EXPORT_ROWS
from sandbox.backscatter import AnswerRecord
from sandbox.dataset_card import write_dataset_card
from sandbox.errors import RunError
from sandbox.protocols import all_protocols
from sandbox.store import RunStore, jsonl
from sandbox.world_export import META, VETO, Exporter, assistant_turn, user_turn
from scenarios import Question, Scenario, ScenarioError, load_scenario

EXPORT_DIR = "export"
FILTERS_FILE = "filters.json"
FILES = ("pairs", "ranked", "critiques", "sft", "spin", "ratings", "prompts", "steps")
DECLINE_SHARE = 0.4  # of the reference sample: about 40% should-decline, 60% should-answer questions


def reference_sample(questions: Sequence[Question], n: int | None, seed: int) -> list[Question]:
    """A seeded, stratified sample of ``n`` questions with references (all when ``n`` is None).

    About 40% should-decline and 60% should-answer questions (the rest from the other side when
    one runs short); within each side, categories take turns (each in a seeded order), so
    small categories such as the ``safe-*`` ones are in the sample.
    """
    pool = sorted((q for q in questions if q.reference is not None), key=lambda q: q.id)
    if n is None or n >= len(pool):
        return pool
    rng = random.Random(seed)
    sides = {"decline": [q for q in pool if q.expected == "decline"],
             "answer": [q for q in pool if q.expected != "decline"]}
    declines = min(len(sides["decline"]), round(DECLINE_SHARE * n))
    answers = min(len(sides["answer"]), n - declines)
    declines = min(len(sides["decline"]), n - answers)

    def take(side: list[Question], k: int) -> list[Question]:
        by_category: dict[str, list[Question]] = defaultdict(list)
        for q in side:
            by_category[q.category].append(q)
        order = sorted(by_category)
        rng.shuffle(order)
        for category in order:
            rng.shuffle(by_category[category])
        taken: list[Question] = []
        while len(taken) < k:
            for category in order:
                if by_category[category] and len(taken) < k:
                    taken.append(by_category[category].pop())
        return taken

    return sorted(take(sides["decline"], declines) + take(sides["answer"], answers), key=lambda q: q.id)


def reference_rows(questions: Sequence[Question], fallback: bool = False) -> list[dict]:
    """``reference`` SFT rows; ``fallback`` marks those for asked questions whose answers were all refused."""
    return [{"prompt": user_turn(q.text), "completion": assistant_turn(q.reference),
             "meta": {"kind": "reference", "question_id": q.id, "category": q.category, "expected": q.expected,
                      "fallback": fallback}}
            for q in questions]


def _uncovered(exporters: Sequence[Exporter], produced: dict[str, list[dict]], sample: Sequence[Question]) -> list[Question]:
    """Asked questions with a reference but no good example from the run and none in the sample.

    When the filters refuse every answer to a question (no agent declined a harmful request),
    its reference is the good example, so the question is not lost from the data.
    """
    covered = _run_covered(produced) | {q.id for q in sample}
    questions = exporters[0].questions
    asked = sorted({a.question_id for e in exporters for a in e.answers})
    return [questions[q] for q in asked if q not in covered and q in questions and questions[q].reference]


def spin_rows(exporters: Sequence[Exporter], sample: Sequence[Question], dropped: Counter) -> list[dict]:
    """``{prompt, real, generated, meta}``: real = the reference, or else the best allowed revision.

    generated is an agent's draft of that question when the run has one (else None). With
    references, the rows are the reference sample's; without, every question the run asked.
    """
    drafts: dict[str, AnswerRecord] = {}
    for exporter in exporters:
        for a in sorted(exporter.answers, key=lambda x: x.id):
            if a.version == 0:
                drafts.setdefault(a.question_id, a)
    rows = []
    if sample:
        for q in sample:
            draft = drafts.get(q.id)
            rows.append({"prompt": user_turn(q.text), "real": assistant_turn(q.reference),
                         "generated": assistant_turn(draft.text) if draft else None,
                         "meta": {"question_id": q.id, "real": "reference", "generated": draft.id if draft else None}})
        return rows
    revisions: dict[str, list[tuple[Exporter, AnswerRecord]]] = defaultdict(list)
    for exporter in exporters:
        for a in exporter.answers:
            if a.version > 0 and a.id in exporter.score:
                revisions[a.question_id].append((exporter, a))
    for question_id in sorted(drafts):
        allowed = [(e, a) for e, a in sorted(revisions[question_id], key=lambda p: (-p[0].score[p[1].id], p[1].id))
                   if e.refusal(a) is None]
        for e, a in revisions[question_id]:
            if (reason := e.refusal(a)) is not None:
                dropped[reason] += 1
        if not allowed:
            dropped["no_allowed_revision"] += 1
            continue
        exporter, real = allowed[0]
        draft = next((a for a in exporter.answers if a.version == 0 and a.round == real.round and a.agent == real.agent),
                     drafts[question_id])
        rows.append({"prompt": user_turn(real.question), "real": assistant_turn(exporter.text(real)),
                     "generated": assistant_turn(draft.text),
                     "meta": {"question_id": question_id, "real": real.id, "generated": draft.id}})
    return rows


# -- the run ----------------------------------------------------------------------------------


def run_questions(entry: dict) -> list[Question]:
    """A scenario's training questions as the run saw them: from the manifest, else its file."""
    if "train_questions" in entry:
        return [Question.model_validate(q) for q in entry["train_questions"]]
    try:
        loaded = load_scenario(entry["path"])
    except ScenarioError:
        return []
    return list(loaded.train_questions) if loaded.sha256 == entry.get("sha256") else []


def world_exporters(store: RunStore, rank_by: str | None = None) -> dict[str, Exporter]:
    """An exporter per world of a run, each with the scenario its world was configured with."""
    manifest = store.manifest()
    configs, questions = {}, {}
    for name, entry in manifest["scenarios"].items():
        configs[name] = Scenario.model_validate(entry["config"])
        questions[name] = {q.id: q for q in run_questions(entry)}
    exporters = {}
    for name, world in store.read_worlds().items():
        scenario = manifest["worlds"][name]["scenario"]
        try:
            exporters[name] = Exporter(world, configs[scenario], questions[scenario], rank_by)
        except ValueError as error:  # judges.weights that the saved questions cannot feed
            raise RunError(f"scenario '{scenario}': judges.weights: {error}") from None
    return exporters


def unavailable_features(questions: Sequence[Question]) -> list[str]:
    """What this bank cannot give, said plainly (a bank without references or `expected`)."""
    notes = []
    if not any(q.reference for q in questions):
        notes.append("no question has a `reference`: no reference judge, no `reference` SFT rows; "
                     "SPIN `real` is the best allowed revision instead")
    if not any(q.expected for q in questions):
        notes.append("no question has `expected`: no decline judge and no veto (set `expected:` on the bank "
                     "or its questions)")
    return notes


def checked(kind: str, text: str) -> str:
    """An export file's text once every line reads back as its row type (formats.rows), as a
    trainer will read it: what the exporter writes is what the trainers accept."""
    row_type = EXPORT_ROWS.get(kind)
    for number, line in enumerate(text.splitlines() if row_type else [], start=1):
        try:
            row_type.model_validate(json.loads(line))
        except ValidationError as error:
            raise RunError(f"{EXPORT_DIR}/{kind}.jsonl:{number}: {error.errors()[0]['msg']} "
                           f"at {'.'.join(map(str, error.errors()[0]['loc']))}") from None
    return text


def export_run(run_dir: str | Path, rank_by: str | None = None) -> dict[str, int]:
    """Write export/<kind>.jsonl and export/filters.json for a run (all its worlds); row counts."""
    store = RunStore.existing(run_dir)
    manifest = store.manifest()
    exporters = world_exporters(store, rank_by)
    produced: dict[str, list[dict]] = {kind: [] for kind in FILES}
    spin_dropped: Counter = Counter()
    report: dict = {"scenarios": {}}
    for scenario_name in manifest["scenarios"]:
        worlds = [e for name, e in exporters.items() if manifest["worlds"][name]["scenario"] == scenario_name]
        if not worlds:
            continue
        for exporter in worlds:
            produced["pairs"] += exporter.pairs()
            if exporter.scenario.export.reference_pairs:
                produced["pairs"] += exporter.reference_pairs()
            produced["ranked"] += exporter.ranked()
            produced["critiques"] += exporter.critiques()
            produced["sft"] += exporter.sft()
            produced["ratings"] += exporter.ratings_rows()
            for protocol in all_protocols():
                for kind, rows in protocol.export(exporter.store).items():
                    produced.setdefault(kind, []).extend(rows)
        config = worlds[0].scenario
        questions = list(worlds[0].questions.values())
        sample = reference_sample(questions, config.export.reference_questions, derive_seed(config.seed, "reference"))
        produced["sft"] += reference_rows(sample)
        produced["sft"] += reference_rows(_uncovered(worlds, produced, sample), fallback=True)
        produced["spin"] += spin_rows(worlds, sample, spin_dropped)
        report["scenarios"][scenario_name] = {
            "rank_by": worlds[0].rank_by, "weights": worlds[0].weights,
            "reference_questions": len(sample), "unavailable": unavailable_features(questions),
        }
    report["rows"] = {kind: len(rows) for kind, rows in produced.items()}
    report["dropped"] = _dropped(exporters.values(), spin_dropped)
    report["answers"] = _answer_counts(exporters.values())
    report["questions"] = _coverage(exporters.values(), produced)
    out = store.root / EXPORT_DIR
    out.mkdir(exist_ok=True)
    for kind, rows in produced.items():
        write_atomic(out / f"{kind}.jsonl", checked(kind, jsonl(rows)))
    write_atomic(out / FILTERS_FILE, json.dumps(report, indent=2, sort_keys=True) + "\n")
    dropped = {f"{kind}: {name}": n for kind, filters in report["dropped"].items() for name, n in filters.items()}
    write_dataset_card(out, manifest, report["rows"], dropped)  # README.md: loadable and shareable as it is
    return report["rows"]


def _dropped(exporters, spin: Counter) -> dict[str, dict[str, int]]:
    """export kind -> filter -> candidate rows it dropped."""
    total: dict[str, Counter] = defaultdict(Counter)
    for exporter in exporters:
        for kind, counter in exporter.dropped.items():
            total[kind].update(counter)
    total["spin"].update(spin)
    return {kind: {f: total[kind].get(f, 0) for f in sorted({VETO, META, *total[kind]})} for kind in ("pairs", "sft", "spin")}


def _answer_counts(exporters) -> dict[str, int]:
    """How many answer versions the veto refused and the meta-talk filter kept, cleaned or dropped."""
    counts = Counter()
    for exporter in exporters:
        for answer in exporter.answers:
            counts["total"] += 1
            counts[f"meta_talk_{exporter.cleaned[answer.id].action}"] += 1
            counts["vetoed"] += exporter.verdicts[answer.id].appropriate is False
    return dict(counts)


def _run_covered(produced: dict[str, list[dict]]) -> set[str]:
    """Questions with a good example made by the run (a chosen, an imitation or realignment row)."""
    kept = {p["meta"]["chosen"]["question_id"] for p in produced["pairs"] if p["source"] != "reference"}
    return kept | {r["meta"]["question_id"] for r in produced["sft"] if r["meta"]["kind"] != "reference"}


def _coverage(exporters, produced: dict[str, list[dict]]) -> dict:
    """Of the questions the run asked, how many kept a good example: from the run, or any (references too)."""
    asked = {a.question_id for e in exporters for a in e.answers}
    from_run = _run_covered(produced) & asked
    any_row = (from_run | {r["meta"]["question_id"] for r in produced["sft"]}) & asked

    def share(n: int) -> float | None:
        return round(n / len(asked), 4) if asked else None

    return {"asked": len(asked), "with_a_run_row": len(from_run), "run_share": share(len(from_run)),
            "with_a_row": len(any_row), "share": share(len(any_row))}


def read_filters(run_dir: str | Path) -> dict | None:
    """The export's filter report, if the run was exported."""
    path = Path(run_dir) / EXPORT_DIR / FILTERS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
