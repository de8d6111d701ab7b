"""The run manifest (RUN/manifest.json) as a type: the simulation checks what it writes against
it, and its readers (sandbox.run_info: the report, the dataset card) read through it.

Only what readers rely on is declared; the rest of what the simulation records (package
versions, per-world memory and failure rates, timestamps) is kept as it is written.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scenarios import Scenario


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ScenarioEntry(_Open):
    path: str = "."  # where the scenario file was (graph files resolve beside it)
    sha256: str = "?"
    config: Scenario  # as the run was configured


class WorldEntry(_Open):
    scenario: str
    replica: int = 0
    seed: int  # what World(loaded, seed) draws the graph and placement from
    rounds_completed: int = 0
    rounds_requested: int = 0


class Manifest(_Open):
    run_id: str = "?"
    status: str = "?"
    identity: dict = Field(default_factory=dict)  # the models (ModelRef dumps) and each world's seed
    scenarios: dict[str, ScenarioEntry]
    worlds: dict[str, WorldEntry]
    rounds_completed: int | None = None
    rounds_requested: int | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    failure_rate: dict[str, float] = Field(default_factory=dict)
    phases: dict[str, dict[str, dict]] = Field(default_factory=dict)  # phase -> model -> calls, tokens, seconds
    tokens_generated: int = 0
    tokens_per_second: float = 0.0
    wall_seconds: float = 0.0

    @model_validator(mode="after")
    def _worlds_name_known_scenarios(self) -> Manifest:
        unknown = sorted({w.scenario for w in self.worlds.values()} - set(self.scenarios))
        if unknown:
            raise ValueError(f"worlds name scenario {unknown[0]!r}, which is not in scenarios")
        return self
