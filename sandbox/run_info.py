"""What a run's manifest says about the run, for its readers (the report, the dataset card).

The one place outside the simulation that knows the manifest's layout (``scenarios`` by name
with their configuration, ``worlds`` by name with scenario, replica and seed, run-wide counts,
failure rates and the phase -> model table), so a change of layout is met here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

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
        """Read ``manifest``; one that is not of this layout is a RunError naming the field."""
        if "scenario_config" in manifest and "scenarios" not in manifest:
            raise RunError(f"{where}: written before the engine (one scenario_config, no worlds); rerun the simulation")
        try:
            scenarios = {name: Scenario.model_validate(entry["config"]) for name, entry in manifest["scenarios"].items()}
            paths = {name: Path(entry.get("path", ".")) for name, entry in manifest["scenarios"].items()}
            hashes = {name: entry.get("sha256", "?") for name, entry in manifest["scenarios"].items()}
            worlds = {name: WorldInfo(name, w["scenario"], w.get("replica", 0), w["seed"],
                                      w.get("rounds_completed", 0), w.get("rounds_requested", 0))
                      for name, w in manifest["worlds"].items()}
        except KeyError as error:
            raise RunError(f"{where}: missing field {error.args[0]!r} (scenarios.<name>.config, worlds.<name>.scenario/seed)") from None
        except (AttributeError, TypeError):
            raise RunError(f"{where}: scenarios and worlds must be objects keyed by name") from None
        except ValidationError as error:
            first = error.errors()[0]
            raise RunError(f"{where}: scenarios: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        unknown = sorted({w.scenario for w in worlds.values()} - set(scenarios))
        if unknown:
            raise RunError(f"{where}: worlds name scenario {unknown[0]!r}, which is not in scenarios")
        identity = manifest.get("identity", {})
        return cls(
            run_id=manifest.get("run_id", "?"),
            status=manifest.get("status", "?"),
            scenarios=scenarios,
            scenario_paths=paths,
            scenario_sha256=hashes,
            worlds=worlds,
            models=identity.get("models", []),
            rounds_completed=manifest.get("rounds_completed"),
            rounds_requested=manifest.get("rounds_requested"),
            counts=manifest.get("counts", {}),
            failure_rates=manifest.get("failure_rate", {}),
            phases=manifest.get("phases", {}),
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

    @property
    def seeds(self) -> str:
        """Each world's seed (a world's graph and samples follow from it), as one line."""
        return ", ".join(f"{w.name} {w.seed}" for w in self.worlds.values())
