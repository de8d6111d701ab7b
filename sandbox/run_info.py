"""What a run's manifest says about the run, for its readers (the report, the dataset card).

The manifest's layout is formats.manifest.Manifest (``scenarios`` by name with their
configuration, ``worlds`` by name with scenario, replica and seed, run-wide counts, failure rates
and the phase -> model table), which the simulation checks before it writes; this is its
readers' view of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from formats.manifest import Manifest
from sandbox.errors import RunError
from scenarios import Scenario


@dataclass(frozen=True)
class WorldInfo:
    name: str  # "<scenario>-r<replica>", its directory under RUN/worlds/
    scenario: str
    replica: int
    seed: int  # what World(loaded, seed) draws the graph and placement from
    rounds_completed: int
    rounds_requested: int


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    scenarios: dict[str, Scenario]  # as the run was configured, by name
    scenario_paths: dict[str, Path]  # where each scenario file was (graph files resolve beside it)
    scenario_sha256: dict[str, str]
    worlds: dict[str, WorldInfo]
    models: list[dict]  # ModelRef dumps: name, backend, options
    rounds_completed: int | None
    rounds_requested: int | None
    counts: dict[str, int] = field(default_factory=dict)
    failure_rates: dict[str, float] = field(default_factory=dict)
    phases: dict[str, dict[str, dict]] = field(default_factory=dict)  # phase -> model -> calls, tokens, seconds
    tokens_generated: int = 0
    tokens_per_second: float = 0.0
    wall_seconds: float = 0.0

    @classmethod
    def from_manifest(cls, manifest: dict, where: str = "manifest.json") -> RunInfo:
        """Read ``manifest`` (formats.manifest); one that is not of this layout is a RunError naming the field."""
        if "scenario_config" in manifest and "scenarios" not in manifest:
            raise RunError(f"{where}: written before the engine (one scenario_config, no worlds); rerun the simulation")
        try:
            read = Manifest.model_validate(manifest)
        except ValidationError as error:
            first = error.errors()[0]
            if first["type"] == "missing":
                raise RunError(f"{where}: missing field {first['loc'][-1]!r} "
                               "(scenarios.<name>.config, worlds.<name>.scenario/seed)") from None
            raise RunError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return cls(
            run_id=read.run_id,
            status=read.status,
            scenarios={name: entry.config for name, entry in read.scenarios.items()},
            scenario_paths={name: Path(entry.path) for name, entry in read.scenarios.items()},
            scenario_sha256={name: entry.sha256 for name, entry in read.scenarios.items()},
            worlds={name: WorldInfo(name, w.scenario, w.replica, w.seed, w.rounds_completed, w.rounds_requested)
                    for name, w in read.worlds.items()},
            models=read.identity.get("models", []),
            rounds_completed=read.rounds_completed,
            rounds_requested=read.rounds_requested,
            counts=read.counts,
            failure_rates=read.failure_rate,
            phases=read.phases,
            tokens_generated=read.tokens_generated,
            tokens_per_second=read.tokens_per_second,
            wall_seconds=read.wall_seconds,
        )

    @property
    def model_names(self) -> str:
        return ", ".join(f"{m.get('name')} ({m.get('backend', 'hf')})" for m in self.models)

    @property
    def rounds(self) -> str:
        return f"{self.rounds_completed}/{self.rounds_requested}"

    @property
    def seeds(self) -> str:
        """Each world's seed (a world's graph and samples follow from it), as one line."""
        return ", ".join(f"{w.name} {w.seed}" for w in self.worlds.values())
