"""The observer panel: memory-less judges that score answers on the scenario's dimensions.

Used by the simulation (every version of every answer) and by evaluation (held-out answers
of trained and baseline models), so both read scores the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents import prompts
from agents.backends import Backend, GenerationRequest
from agents.grouping import call_grouped
from agents.judge import Rating, ratings_from_json, ratings_from_logprobs
from scenarios import ObserversConfig


@dataclass(frozen=True)
class ObserverScore:
    observer: int
    dimension: str
    rating: Rating


class ObserverPanel:
    def __init__(self, config: ObserversConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.personas = config.personas or [prompts.OBSERVER_PERSONA]

    def score(self, items: list[tuple[str, str]], seed: int) -> list[list[ObserverScore]]:
        """For each (question, answer): one score per observer and dimension, in one batched pass."""
        as_json = self.config.rating.method == "json"
        work = [
            (item, observer, dimension)
            for item in range(len(items))
            for observer in range(self.config.count)
            for dimension in self.config.dimensions
        ]
        messages = [
            prompts.observer_messages(d.name, d.description, tuple(d.scale), *items[i], as_json,
                                      self.personas[o % len(self.personas)])
            for i, o, d in work
        ]

        def rate(scale: tuple[int, int], positions: list[int]) -> list[Rating]:
            batch = [messages[p] for p in positions]
            if as_json:
                return ratings_from_json(self.backend, batch, scale, self._json_request(positions, seed),
                                         self.config.rating.max_retries)
            return ratings_from_logprobs(self.backend, batch, scale)

        # One call per distinct scale (the digits read differ); normally exactly one.
        ratings = call_grouped([tuple(d.scale) for _, _, d in work], range(len(work)), rate)
        per_item: list[list[ObserverScore]] = [[] for _ in items]
        for (item, observer, dimension), rating in zip(work, ratings):
            per_item[item].append(ObserverScore(observer, dimension.name, rating))
        return per_item

    @staticmethod
    def _json_request(positions: list[int], seed: int):
        """Each (item, observer, dimension) position and retry attempt samples with its own seed."""

        def request_for(i, messages, attempt):
            position_seed = (seed * 1_000_003 + positions[i] * 101 + attempt) & 0x7FFFFFFF
            return GenerationRequest(messages, temperature=0.7, max_new_tokens=24, seed=position_seed)

        return request_for
