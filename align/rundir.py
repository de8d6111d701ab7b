"""The training output directory: which run owns it, its checkpoints, and its metrics log.

A directory belongs to one run, identified by train_config.json. Starting a run there again
without resuming, or resuming with different data, model or hyper-parameters, is refused
rather than silently mixing two runs. Only the horizon (epochs, max_steps, save_steps, iterations) may
change on resume, so a finished run can be extended.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

from agents.bounded import BoundedInputError, read_json_file
from agents.files import write_atomic
from align.errors import DataError
from align.processes import process_state

HORIZON_FIELDS = frozenset({"epochs", "max_steps", "save_steps", "iterations"})
_NOT_IDENTITY = frozenset({"data", "versions"})  # where the data lives and library versions may change
_CHECKPOINT_PREFIX = "step-"
_STAGING_PREFIX = ".partial-"


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_file = self.path / "train_config.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.plot_file = self.path / "metrics.png"
        self.reference_cache = self.path / "reference_logps.safetensors"
        self.checkpoints = self.path / "checkpoints"
        self.finished_file = self.path / "finished.json"

    # -- ownership ----------------------------------------------------------------------

    def check_claim(self, run_info: dict, resume: bool) -> None:
        """Raise DataError unless the directory may hold this run; writes nothing."""
        run_info = _as_read_back(run_info)
        existing = self.read_config()
        if existing is None:
            if self.path.exists() and any(self.path.iterdir()):
                raise DataError(
                    f"{self.path}: not empty and holds no training run; choose a new output directory"
                )
        elif not resume:
            raise DataError(
                f"{self.path}: already holds a training run; resume it or choose another output directory"
            )
        else:
            differences = _identity_differences(existing, run_info)
            if differences:
                raise DataError(
                    f"{self.path}: holds a different training run (changed: {', '.join(differences)}); cannot resume it"
                )

    def claim(self, run_info: dict, resume: bool) -> None:
        """Check the directory may hold this run, then record the run in train_config.json."""
        state = process_state()
        self.check_claim(run_info, resume)
        state.wait_for_everyone()  # every process has read the old config before it is replaced
        if state.is_main_process:
            self.path.mkdir(parents=True, exist_ok=True)
            record = {**run_info, "versions": _versions()}
            write_atomic(self.config_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
        state.wait_for_everyone()

    def read_config(self) -> dict | None:
        if not self.config_file.is_file():
            return None
        try:
            config = read_json_file(self.config_file)
        except BoundedInputError as error:
            raise DataError(f"{error}; remove the directory") from None
        if not isinstance(config, dict):
            raise DataError(f"{self.config_file}: not a JSON object; remove the directory")
        return config

    # -- completion ---------------------------------------------------------------------

    def finish(self, run_info: dict, model_dir: Path, step: int) -> None:
        """Record that this run, horizon included, is complete (written after the final model)."""
        if process_state().is_main_process:
            record = {"run": _as_read_back(run_info), "model": str(model_dir.relative_to(self.path)), "step": step}
            write_atomic(self.finished_file, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def finished(self, run_info: dict) -> tuple[Path, int] | None:
        """The final model and step of this exact run if it already completed, so resuming it
        returns at once instead of reloading, retraining nothing and saving the same weights again.
        Any difference (an extended horizon, other data) means it is not finished."""
        if not self.finished_file.is_file():
            return None
        try:
            record = read_json_file(self.finished_file)
        except BoundedInputError:
            return None  # unreadable: resume from the checkpoints, which rewrites it
        if not isinstance(record, dict) or record.get("run") != _as_read_back(run_info):
            return None
        model_dir = self.path / str(record.get("model", ""))
        return (model_dir, int(record["step"])) if model_dir.is_dir() else None

    # -- checkpoints --------------------------------------------------------------------

    def latest_checkpoint(self) -> tuple[Path, int] | None:
        """The newest complete checkpoint and its optimizer step (staging dirs are never complete)."""
        found = [
            (int(p.name.removeprefix(_CHECKPOINT_PREFIX)), p)
            for p in self.checkpoints.glob(f"{_CHECKPOINT_PREFIX}*")
            if p.name.removeprefix(_CHECKPOINT_PREFIX).isdigit()
        ]
        if not found:
            return None
        step, path = max(found)
        return path, step

    def staging_dir(self, step: int) -> Path:
        return self.checkpoints / f"{_STAGING_PREFIX}{_CHECKPOINT_PREFIX}{step:08d}"

    def commit_checkpoint(self, step: int) -> Path:
        """Publish a staged checkpoint with one rename (a crash never leaves a half checkpoint), drop older ones."""
        final = self.checkpoints / f"{_CHECKPOINT_PREFIX}{step:08d}"
        if final.exists():
            shutil.rmtree(final)
        self.staging_dir(step).rename(final)
        for old in self.checkpoints.iterdir():
            if old != final:
                shutil.rmtree(old)
        return final

    # -- metrics ------------------------------------------------------------------------

    def append_metrics(self, row: dict) -> None:
        with self.metrics_file.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.is_file():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def rewind_metrics(self, step: int) -> None:
        """Forget rows after `step`: their progress was lost with the interruption and will be redone."""
        kept = [row for row in self.read_metrics() if row["step"] <= step]
        write_atomic(self.metrics_file, "".join(json.dumps(row) + "\n" for row in kept))


def _as_read_back(run_info: dict) -> dict:
    """The run info as its JSON file reads back (tuples become lists), so the two compare equal."""
    return json.loads(json.dumps(run_info))


def _identity_differences(existing: dict, new: dict) -> list[str]:
    differences = [
        key
        for key in sorted(set(existing) | set(new))
        if key not in _NOT_IDENTITY and key != "config" and existing.get(key) != new.get(key)
    ]
    old_config, new_config = existing.get("config", {}), new.get("config", {})
    differences += [
        key
        for key in sorted(set(old_config) | set(new_config))
        if key not in HORIZON_FIELDS and old_config.get(key) != new_config.get(key)
    ]
    return differences


def _versions() -> dict[str, str]:
    return {name: version(name) for name in ("torch", "transformers", "accelerate", "peft")}
