"""What a run's manifest says about the run, for its readers (the report, the dataset card).

The manifest's layout is formats.manifest.Manifest (``scenarios`` by name with their
configuration, ``worlds`` by name with scenario, replica and seed, run-wide counts, failure rates
and the phase -> model table), which the simulation checks before it writes; this is its
readers' view of it.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """A checked manifest (``manifest``, formats.manifest.Manifest: counts, failure rates, phases,
    tokens) and the views its readers need that it does not hold as objects: each scenario's
    configuration and file path, each world's entry."""

    manifest: Manifest

    @classmethod
    def from_manifest(cls, manifest: dict, where: str = "manifest.json") -> RunInfo:
        """Read ``manifest`` (formats.manifest); one that is not of this layout is a RunError naming the field."""
        if "scenario_config" in manifest and "scenarios" not in manifest:
            raise RunError(f"{where}: written before the engine (one scenario_config, no worlds); rerun the simulation")
        try:
            return cls(Manifest.model_validate(manifest))
        except ValidationError as error:
            first = error.errors()[0]
            if first["type"] == "missing":
                raise RunError(f"{where}: missing field {first['loc'][-1]!r} "
                               "(scenarios.<name>.config, worlds.<name>.scenario/seed)") from None
            raise RunError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    @property
    def scenarios(self) -> dict[str, Scenario]:
        """As the run was configured, by name."""
        return {name: entry.config for name, entry in self.manifest.scenarios.items()}

    @property
    def scenario_paths(self) -> dict[str, Path]:
        """Where each scenario file was (graph files resolve beside it)."""
        return {name: Path(entry.path) for name, entry in self.manifest.scenarios.items()}

    @property
    def worlds(self) -> dict[str, WorldInfo]:
        return {name: WorldInfo(name, w.scenario, w.replica, w.seed, w.rounds_completed, w.rounds_requested)
                for name, w in self.manifest.worlds.items()}

    @property
    def model_names(self) -> str:
        models = self.manifest.identity.get("models", [])  # ModelRef dumps: name, backend, options
        return ", ".join(f"{m.get('name')} ({m.get('backend', 'hf')})" for m in models)

    @property
    def rounds(self) -> str:
        return f"{self.manifest.rounds_completed}/{self.manifest.rounds_requested}"

    @property
    def seeds(self) -> str:
        """Each world's seed (a world's graph and samples follow from it), as one line."""
        return ", ".join(f"{w.name} {w.seed}" for w in self.worlds.values())
