"""Records → training files in TRL's conversational formats (see DESIGN.md).

An answer's score is the mean over observers of the scenario's score dimension. Pairs come
from two sources: an agent's final revision vs its draft when the score rose by at least the
margin ("revision"), and different agents' final answers to the same question whose scores
differ by at least the margin ("cross-agent").
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from agents.files import write_atomic
from agents.prompts import revision_messages
from sandbox.backscatter import AnswerRecord, RatingRecord, ScoreRecord, final_answers, mean_peer_rating
from sandbox.selfplay import pair_rows, prompt_rows, ranked_rows
from sandbox.store import RunStore, WorldStore, jsonl
from scenarios import Scenario

EXPORT_DIR = "export"
FILES = ("pairs", "ranked", "critiques", "sft", "ratings", "prompts")


def _user(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def answer_scores(scores: list[ScoreRecord]) -> dict[str, dict[str, float]]:
    """answer id → dimension → mean observer score (parse failures left out)."""
    collected: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scores:
        if s.ok:
            collected[s.answer_id][s.dimension].append(s.score)
    return {a: {d: statistics.fmean(v) for d, v in dims.items()} for a, dims in collected.items()}


class Exporter:
    """One world's training rows (pairs compare answers within a world: its agents are its own)."""

    def __init__(self, store: WorldStore, scenario: Scenario) -> None:
        self.margin = scenario.export.pair_margin
        self.dimension = scenario.score_dimension
        self.sft_min_score = scenario.export.sft_min_score
        self.scale = scenario.backscatter.scale
        self.answers: list[AnswerRecord] = store.records("answers")
        self.ratings: list[RatingRecord] = store.records("ratings")
        self.by_dimension = answer_scores(store.records("scores"))
        self.score = {a: dims[self.dimension] for a, dims in self.by_dimension.items() if self.dimension in dims}
        self.selfplay = store.records("selfplay")  # rows built by sandbox.selfplay
        self.selfplay_margin = scenario.selfplay.pair_margin if scenario.selfplay else 0.0

    def _meta(self, answer: AnswerRecord) -> dict:
        return answer.model_dump(include={"id", "round", "agent", "group", "question_id", "version"})

    def _pair(self, chosen: AnswerRecord, rejected: AnswerRecord, source: str) -> dict:
        return {
            "prompt": _user(chosen.question),
            "chosen": _assistant(chosen.text),
            "rejected": _assistant(rejected.text),
            "score_chosen": round(self.score[chosen.id], 4),
            "score_rejected": round(self.score[rejected.id], 4),
            "source": source,
            "meta": {"chosen": self._meta(chosen), "rejected": self._meta(rejected), "dimension": self.dimension},
        }

    def finals(self) -> list[AnswerRecord]:
        return final_answers(self.answers)

    def _scored_by_question(self) -> dict[str, list[AnswerRecord]]:
        by_question = defaultdict(list)
        for a in self.answers:
            if a.id in self.score:
                by_question[a.question_id].append(a)
        return by_question

    def pairs(self) -> list[dict]:
        pairs = []
        drafts = {(a.round, a.agent): a for a in self.answers if a.version == 0}
        finals = [a for a in self.finals() if a.id in self.score]
        for final in finals:
            draft = drafts.get((final.round, final.agent))
            improved = (
                final.version > 0 and draft and draft.id in self.score and final.text != draft.text
                and self.score[final.id] - self.score[draft.id] >= self.margin
            )
            if improved:
                pairs.append(self._pair(final, draft, "revision"))
        by_question = defaultdict(list)
        for final in finals:
            by_question[final.question_id].append(final)
        for question_id in sorted(by_question):
            for a, b in combinations(sorted(by_question[question_id], key=lambda x: x.id), 2):
                if a.text == b.text:
                    continue
                high, low = (a, b) if self.score[a.id] >= self.score[b.id] else (b, a)
                if self.score[high.id] - self.score[low.id] >= self.margin:
                    pairs.append(self._pair(high, low, "cross-agent"))
        return pairs + pair_rows(self.selfplay, self.selfplay_margin)

    def ranked(self) -> list[dict]:
        by_question = self._scored_by_question()
        rows = []
        for question_id in sorted(by_question):
            answers = sorted(by_question[question_id], key=lambda a: (-self.score[a.id], a.id))
            rows.append({
                "prompt": _user(answers[0].question),
                "responses": [_assistant(a.text) for a in answers],
                "scores": [round(self.score[a.id], 4) for a in answers],
                "meta": {"question_id": question_id, "answers": [self._meta(a) for a in answers],
                         "dimension": self.dimension},
            })
        return rows + ranked_rows(self.selfplay)

    def critiques(self) -> list[dict]:
        answers = {a.id: a for a in self.answers}
        rows = []
        for r in self.ratings:
            answer = answers.get(r.answer_id)
            if answer is None or not r.ok:
                continue
            rows.append({
                "question": answer.question,
                "answer": answer.text,
                "rating": round(r.rating, 4),
                "reason": r.reason,
                "scale": list(self.scale),
                "meta": {"answer": self._meta(answer), "rater": r.rater, "rater_group": r.rater_group,
                         "method": r.method},
            })
        return rows

    def sft(self) -> list[dict]:
        """Imitation of each question's best answer, and realignment (draft + feedback → revision)."""
        rows = []
        by_question = self._scored_by_question()
        for question_id in sorted(by_question):
            best = max(by_question[question_id], key=lambda a: (self.score[a.id], a.id))
            if self.sft_min_score is None or self.score[best.id] >= self.sft_min_score:
                rows.append({"prompt": _user(best.question), "completion": _assistant(best.text),
                             "meta": {"kind": "imitation", "score": round(self.score[best.id], 4),
                                      **self._meta(best)}})
        feedback = defaultdict(list)
        for r in self.ratings:
            feedback[(r.round, r.agent, r.version)].append(r)
        versions = {(a.round, a.agent, a.version): a for a in self.answers}
        for a in sorted(self.answers, key=lambda x: x.id):
            previous_key = (a.round, a.agent, a.version - 1)
            previous = versions.get(previous_key)
            if a.version == 0 or previous is None or a.id not in self.score or previous.id not in self.score:
                continue
            if self.score[a.id] - self.score[previous.id] < self.margin:
                continue
            ratings = feedback[previous_key]
            prompt = revision_messages("You are a helpful, honest and harmless assistant.", a.question,
                                       previous.text, mean_peer_rating(ratings), self.scale,
                                       [r.reason for r in ratings])
            rows.append({"prompt": prompt, "completion": _assistant(a.text),
                         "meta": {"kind": "realignment", "gain": round(self.score[a.id] - self.score[previous.id], 4),
                                  **self._meta(a)}})
        return rows

    def ratings_rows(self) -> list[dict]:
        return [
            {"prompt": _user(a.question), "completion": _assistant(a.text),
             "scores": {d: round(v, 4) for d, v in self.by_dimension[a.id].items()}, "meta": self._meta(a)}
            for a in self.answers
            if a.id in self.by_dimension
        ]


def world_exporters(store: RunStore) -> dict[str, Exporter]:
    """An exporter per world of a run, each with the scenario its world was configured with."""
    manifest = store.manifest()
    configs = {name: Scenario.model_validate(entry["config"]) for name, entry in manifest["scenarios"].items()}
    return {
        name: Exporter(world, configs[manifest["worlds"][name]["scenario"]])
        for name, world in store.read_worlds().items()
    }


def export_run(run_dir: str | Path) -> dict[str, int]:
    """Write export/<kind>.jsonl for a run directory (all its worlds) and return the row counts."""
    store = RunStore.existing(run_dir)
    produced: dict[str, list[dict]] = {kind: [] for kind in FILES}
    for exporter in world_exporters(store).values():
        produced["pairs"] += exporter.pairs()
        produced["ranked"] += exporter.ranked()
        produced["critiques"] += exporter.critiques()
        produced["sft"] += exporter.sft()
        produced["ratings"] += exporter.ratings_rows()
        produced["prompts"] += prompt_rows(exporter.selfplay)
    out = store.root / EXPORT_DIR
    out.mkdir(exist_ok=True)
    for kind, rows in produced.items():
        write_atomic(out / f"{kind}.jsonl", jsonl(rows))
    return {kind: len(rows) for kind, rows in produced.items()}
