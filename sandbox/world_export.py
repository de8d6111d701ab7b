"""One world's Back-Scatter records → its rows of the training files (TRL's conversational formats).

Answers are ranked by a judge or a weighted mix of judges (the scenario's ``judges``): the
observer panel's score on the scenario's dimension rescaled to [0, 1], decline-
appropriateness (1 when the answer did what the question's ``expected`` says) and cosine
similarity to the question's ``reference``. The mix is the weighted mean of the judges that
scored an answer.

Two filters decide which answers may be taught as good (a pair's ``chosen``, an ``sft``
completion, a ``spin`` row's ``real``):

- the veto: an answer that complies with a should-decline question or declines a
  should-answer one (the decline detector against ``expected``) never is, whatever the LM
  judges said;
- the meta-talk filter (sandbox.filters): a wrapper like "Here's a revised answer:" is
  stripped, an answer that only talks about an answer is dropped.

Pairs: an agent's final revision vs its draft when its rank score rose by at least the margin
("revision"), and different agents' final answers to one question whose scores differ by at
least the margin ("cross-agent"). SFT: each question's best allowed answer ("imitation"), a
revision that gained the margin after its feedback ("realignment"), and the bank's reference
answers for a seeded sample of training questions ("reference", written by sandbox.export).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations

from agents.engine import Scheduler
from agents.prompts import revision_messages
from judges.lm import available_judges, verify
from judges.verifiable import mix
from sandbox.backscatter import (
    AnswerRecord,
    RatingRecord,
    ScoreRecord,
    VerdictRecord,
    final_answers,
    mean_peer_rating,
    verdict_record,
)
from sandbox.errors import RunError
from sandbox.filters import Cleaned, clean_answer
from sandbox.selfplay import pair_rows, ranked_rows
from sandbox.store import WorldStore
from scenarios import Question, Scenario
from scenarios.schema import RANK_BY

VETO, META = "veto", "meta_talk"
REALIGNMENT_PERSONA = "You are a helpful, honest and harmless assistant."


def user_turn(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def assistant_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def answer_scores(scores: list[ScoreRecord]) -> dict[str, dict[str, float]]:
    """answer id → dimension → mean observer score (parse failures left out)."""
    collected: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scores:
        if s.ok:
            collected[s.answer_id][s.dimension].append(s.score)
    return {a: {d: statistics.fmean(v) for d, v in dims.items()} for a, dims in collected.items()}


def rank_judge_problem(rank_by: str, weights: dict[str, float], questions: Sequence[Question]) -> str | None:
    """Why answers cannot be ranked by ``rank_by`` for these questions (None when they can)."""
    if rank_by not in RANK_BY:
        return f"cannot rank by '{rank_by}': expected one of {', '.join(RANK_BY)}"
    if rank_by in ("observer", "mix") or rank_by in available_judges(questions):
        return None
    field = "expected" if rank_by == "decline" else "reference"
    return f"cannot rank by '{rank_by}': no question of the bank has `{field}` (judges with data: " \
           f"{', '.join(['observer', *available_judges(questions)])})"


def compute_verdicts(answers: Sequence[AnswerRecord], questions: dict[str, Question],
                     embedder: str) -> list[VerdictRecord]:
    """Verdicts for answers of a run recorded before verdicts existed (one embedding pass)."""
    asked = [questions.get(a.question_id, Question(id=a.question_id, text=a.question)) for a in answers]
    encoder = None
    if "reference" in available_judges(asked):
        from agents.memory import Encoder

        encoder = Encoder(embedder)
    (judged,) = Scheduler().run([verify(asked, [a.text for a in answers], encoder)])
    return [verdict_record(a, q.expected, j, a.round, "observe") for a, q, j in zip(answers, asked, judged)]


class Exporter:
    """One world's rows (pairs compare answers within a world: its agents are its own)."""

    def __init__(self, store: WorldStore, scenario: Scenario, questions: dict[str, Question],
                 rank_by: str | None = None) -> None:
        self.store = store
        self.scenario = scenario
        self.questions = questions
        self.dimension = scenario.score_dimension
        low, high = next(d.scale for d in scenario.observers.dimensions if d.name == self.dimension)
        self.margin = scenario.export.pair_margin / (high - low)  # observer-scale points -> [0, 1]
        minimum = scenario.export.sft_min_score
        self.sft_min_score = None if minimum is None else (minimum - low) / (high - low)
        self.scale = scenario.backscatter.scale
        self.weights = scenario.judges.resolved(list(questions.values()))
        self.rank_by = rank_by or scenario.judges.rank_by
        problem = rank_judge_problem(self.rank_by, self.weights, list(questions.values()))
        if problem:
            raise RunError(f"scenario '{scenario.name}': {problem}")
        self.answers: list[AnswerRecord] = store.records("answers")
        self.ratings: list[RatingRecord] = store.records("ratings")
        self.by_dimension = answer_scores(store.records("scores"))
        # The observer panel's mean on the score dimension, on its own scale (what reports plot).
        self.observed = {a: dims[self.dimension] for a, dims in self.by_dimension.items() if self.dimension in dims}
        verdicts: list[VerdictRecord] = store.records("verdicts")
        known = {v.answer_id for v in verdicts}
        missing = [a for a in self.answers if a.id not in known]
        if missing:
            verdicts += compute_verdicts(missing, questions, scenario.memory.embedder)
        self.verdicts = {v.answer_id: v for v in verdicts}
        self.judged = {a.id: self._judge_scores(a, low, high) for a in self.answers}
        self.score = {a: s for a, judges in self.judged.items() if (s := self._rank_score(judges)) is not None}
        self.cleaned: dict[str, Cleaned] = {a.id: clean_answer(a.text, a.question) for a in self.answers}
        self.dropped: dict[str, Counter] = defaultdict(Counter)
        self.selfplay = store.records("selfplay")  # its rows are built by sandbox.selfplay
        self.selfplay_margin = scenario.selfplay.pair_margin if scenario.selfplay else 0.0

    # -- judging ----------------------------------------------------------------------------

    def _judge_scores(self, answer: AnswerRecord, low: int, high: int) -> dict[str, float]:
        scores = {}
        observed = self.by_dimension.get(answer.id, {}).get(self.dimension)
        if observed is not None:
            scores["observer"] = (observed - low) / (high - low)
        for name, value in self.verdicts[answer.id].judges.items():
            if value is not None:
                scores[name] = value
        return scores

    def _rank_score(self, judges: dict[str, float]) -> float | None:
        return mix(judges, self.weights) if self.rank_by == "mix" else judges.get(self.rank_by)

    def refusal(self, answer: AnswerRecord) -> str | None:
        """Why ``answer`` may not be taught as good (``veto`` or ``meta_talk``), or None."""
        if self.verdicts[answer.id].appropriate is False:
            return VETO
        if not self.cleaned[answer.id].kept:
            return META
        return None

    def text(self, answer: AnswerRecord) -> str:
        """The answer as exported: cleaned of meta-talk where the filter could clean it."""
        return self.cleaned[answer.id].text or answer.text

    def _meta(self, answer: AnswerRecord) -> dict:
        meta = answer.model_dump(include={"id", "round", "agent", "group", "question_id", "version"})
        meta["judges"] = {k: round(v, 4) for k, v in self.judged[answer.id].items()}
        meta["expected"] = self.verdicts[answer.id].expected
        meta["declined"] = self.verdicts[answer.id].declined
        meta["meta_talk"] = self.cleaned[answer.id].action
        return meta

    # -- rows -------------------------------------------------------------------------------

    def _pair(self, chosen: AnswerRecord, rejected: AnswerRecord, source: str) -> dict:
        return self._pair_row(chosen.question, (self.text(chosen), self.score[chosen.id], self._meta(chosen)),
                              rejected, source)

    def _pair_row(self, question: str, chosen: tuple[str, float, dict], rejected: AnswerRecord, source: str) -> dict:
        """A pairs row: ``chosen`` as (text, rank score, meta), ``rejected`` one of the run's answers."""
        text, score, meta = chosen
        return {
            "prompt": user_turn(question),
            "chosen": assistant_turn(text),
            "rejected": assistant_turn(self.text(rejected)),
            "score_chosen": round(score, 4),
            "score_rejected": round(self.score.get(rejected.id, 0.0), 4),
            "source": source,
            "meta": {"chosen": meta, "rejected": self._meta(rejected), "rank_by": self.rank_by,
                     "weights": self.weights, "dimension": self.dimension},
        }

    def finals(self) -> list[AnswerRecord]:
        return final_answers(self.answers)

    def _scored_by_question(self) -> dict[str, list[AnswerRecord]]:
        by_question = defaultdict(list)
        for a in self.answers:
            if a.id in self.score:
                by_question[a.question_id].append(a)
        return by_question

    def _allowed(self, kind: str, answer: AnswerRecord) -> bool:
        """Whether ``answer`` may be a good example in ``kind``; counts the filter that refused it."""
        reason = self.refusal(answer)
        if reason:
            self.dropped[kind][reason] += 1
        return reason is None

    def pairs(self) -> list[dict]:
        candidates = []
        drafts = {(a.round, a.agent): a for a in self.answers if a.version == 0}
        finals = [a for a in self.finals() if a.id in self.score]
        for final in finals:
            draft = drafts.get((final.round, final.agent))
            improved = (
                final.version > 0 and draft and draft.id in self.score and final.text != draft.text
                and self.score[final.id] - self.score[draft.id] >= self.margin
            )
            if improved:
                candidates.append((final, draft, "revision"))
        by_question = defaultdict(list)
        for final in finals:
            by_question[final.question_id].append(final)
        for question_id in sorted(by_question):
            for a, b in combinations(sorted(by_question[question_id], key=lambda x: x.id), 2):
                if a.text == b.text:
                    continue
                high, low = (a, b) if self.score[a.id] >= self.score[b.id] else (b, a)
                if self.score[high.id] - self.score[low.id] >= self.margin:
                    candidates.append((high, low, "cross-agent"))
        own = [self._pair(*c) for c in candidates if self._allowed("pairs", c[0])]
        return own + pair_rows(self.selfplay, self.selfplay_margin)

    def reference_pairs(self) -> list[dict]:
        """The bank's reference (chosen) over each distinct answer the verifiable judges veto.

        A small model's society may give no appropriate answer to a question (no 135M agent
        declines a harmful request), so pairs among its own answers cannot teach when to decline;
        its failures, each against the reference, can. A reference scores 1.0: it is what every
        verifiable judge measures against.
        """
        rows, seen = [], set()
        for answer in sorted(self.answers, key=lambda a: a.id):
            question = self.questions.get(answer.question_id)
            vetoed = question is not None and question.reference and self.verdicts[answer.id].appropriate is False
            if not vetoed or (question.id, answer.text) in seen:
                continue
            seen.add((question.id, answer.text))
            meta = {"id": f"reference-{question.id}", "kind": "reference", "question_id": question.id,
                    "expected": question.expected, "judges": {}}
            rows.append(self._pair_row(answer.question, (question.reference, 1.0, meta), answer, "reference"))
        return rows

    def ranked(self) -> list[dict]:
        by_question = self._scored_by_question()
        rows = []
        for question_id in sorted(by_question):
            answers = sorted(by_question[question_id], key=lambda a: (-self.score[a.id], a.id))
            rows.append({
                "prompt": user_turn(answers[0].question),
                "responses": [assistant_turn(self.text(a)) for a in answers],
                "scores": [round(self.score[a.id], 4) for a in answers],
                "meta": {"question_id": question_id, "answers": [self._meta(a) for a in answers],
                         "rank_by": self.rank_by, "dimension": self.dimension},
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

    def best_allowed(self, kind: str, candidates: Sequence[AnswerRecord]) -> AnswerRecord | None:
        """The highest-ranked candidate that passes the filters (the others are counted)."""
        for answer in sorted(candidates, key=lambda a: (-self.score[a.id], a.id)):
            if self._allowed(kind, answer):
                return answer
        return None

    def sft(self) -> list[dict]:
        """Imitation of each question's best allowed answer, and realignment (feedback → revision)."""
        rows = []
        by_question = self._scored_by_question()
        for question_id in sorted(by_question):
            best = self.best_allowed("sft", by_question[question_id])
            if best is None:
                continue
            if self.sft_min_score is not None and self.score[best.id] < self.sft_min_score:
                self.dropped["sft"]["min_score"] += 1
                continue
            rows.append({"prompt": user_turn(best.question), "completion": assistant_turn(self.text(best)),
                         "meta": {"kind": "imitation", "score": round(self.score[best.id], 4),
                                  "rank_by": self.rank_by, **self._meta(best)}})
        feedback = defaultdict(list)
        for r in self.ratings:
            feedback[(r.round, r.agent, r.version)].append(r)
        versions = {(a.round, a.agent, a.version): a for a in self.answers}
        for a in sorted(self.answers, key=lambda x: x.id):
            previous_key = (a.round, a.agent, a.version - 1)
            previous = versions.get(previous_key)
            if a.version == 0 or previous is None or a.id not in self.score or previous.id not in self.score:
                continue
            if self.score[a.id] - self.score[previous.id] < self.margin or not self._allowed("sft", a):
                continue
            ratings = feedback[previous_key]
            prompt = revision_messages(REALIGNMENT_PERSONA, a.question, previous.text, mean_peer_rating(ratings),
                                       self.scale, [r.reason for r in ratings])
            rows.append({"prompt": prompt, "completion": assistant_turn(self.text(a)),
                         "meta": {"kind": "realignment", "gain": round(self.score[a.id] - self.score[previous.id], 4),
                                  "rank_by": self.rank_by, **self._meta(a)}})
        return rows

    def ratings_rows(self) -> list[dict]:
        return [
            {"prompt": user_turn(a.question), "completion": assistant_turn(a.text),
             "scores": {d: round(v, 4) for d, v in self.by_dimension[a.id].items()}, "meta": self._meta(a)}
            for a in self.answers
            if a.id in self.by_dimension
        ]


# -- reference questions and SPIN -------------------------------------------------------------
