"""What a run's manifest says about the run, for its readers (the report, the dataset card).

The one place outside the simulation that knows the manifest's layout, so a change of layout
(several worlds, several scenarios) is met here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scenarios import Scenario


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    scenarios: dict[str, Scenario]  # as the run was configured, by name
    scenario_paths: dict[str, Path]  # where each scenario file was (graph files resolve beside it)
    seed: int | None
    models: list[dict]  # ModelRef dumps: name, backend, options
    rounds_completed: int | None
    rounds_requested: int | None
    scenario_sha256: str | None
    counts: dict[str, int] = field(default_factory=dict)
    failure_rates: dict[str, float] = field(default_factory=dict)
    tokens_generated: int = 0
    tokens_per_second: float = 0.0
    wall_seconds: float = 0.0

    @classmethod
    def from_manifest(cls, manifest: dict) -> RunInfo:
        identity = manifest.get("identity", {})
        scenario = Scenario.model_validate(manifest["scenario_config"])
        return cls(
            run_id=manifest.get("run_id", "?"),
            status=manifest.get("status", "?"),
            scenarios={scenario.name: scenario},
            scenario_paths={scenario.name: Path(manifest.get("scenario_path", "."))},
            seed=identity.get("seed"),
            models=identity.get("models", []),
            rounds_completed=manifest.get("rounds_completed"),
            rounds_requested=manifest.get("rounds_requested"),
            scenario_sha256=identity.get("scenario_sha256"),
            counts=manifest.get("counts", {}),
            failure_rates=manifest.get("parse_failure_rate", {}),
            tokens_generated=manifest.get("tokens_generated", 0),
            tokens_per_second=manifest.get("tokens_per_second", 0.0),
            wall_seconds=manifest.get("wall_seconds", 0.0),
        )

    @property
    def model_names(self) -> str:
        return ", ".join(f"{m.get('name')} ({m.get('backend', 'hf')})" for m in self.models)

    @property
    def rounds(self) -> str:
        return f"{self.rounds_completed}/{self.rounds_requested}"
