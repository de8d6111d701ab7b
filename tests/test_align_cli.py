"""`socialign train`: a run directory in, a model out; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from test_align_data import SAMPLE_PAIRS, pair_record, write_pairs

from align.flags import config_from_args
from socialign.cli import main


def train_args(data, model, out, *extra: str) -> list[str]:
    return ["train", "--method", "dpo", "--data", str(data), "--model", str(model), "--out", str(out), *extra]


def test_bad_data_line_is_one_line_on_stderr_and_exit_2(tmp_path, tiny_model_dir):
    records = [pair_record(*SAMPLE_PAIRS[0]), {**pair_record(*SAMPLE_PAIRS[1]), "chosen": "plain text"}]
    path = write_pairs(tmp_path / "pairs.jsonl", records)
    # A real process: what the user sees, with nothing swallowed by the test harness.
    completed = subprocess.run(
        [sys.executable, "-m", "socialign.cli", *train_args(path, tiny_model_dir, tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"socialign train: error: {path}:2: field 'chosen' must be a list of one assistant message"
    ]
    assert not (tmp_path / "out").exists()  # nothing written before the data is known good


def test_train_from_a_run_directory(tmp_path, tiny_model_dir, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(train_args(run, tiny_model_dir, tmp_path / "out")) == 2  # a run without an export yet
    assert "run `socialign export" in capsys.readouterr().err

    write_pairs(run / "export" / "pairs.jsonl")
    args = train_args(
        run, tiny_model_dir, tmp_path / "out", "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3"
    )
    assert main(args) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "out" / "train_config.json").read_text())
    assert recorded["data"] == str((run / "export" / "pairs.jsonl").resolve())
    assert recorded["config"]["lr"] == 1e-3 and recorded["config"]["beta"] == 0.1
    assert (tmp_path / "out" / "config.json").is_file()

    # The same directory again, without --resume: refused, not overwritten.
    assert main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_inconsistent_options_and_unknown_methods_exit_2(tmp_path, tiny_model_dir, capsys):
    path = write_pairs(tmp_path / "pairs.jsonl")
    assert (
        main(train_args(path, tiny_model_dir, tmp_path / "out", "--loss", "ipo", "--label-smoothing", "0.1"))
        == 2
    )
    assert capsys.readouterr().err.strip() == (
        "socialign train: error: invalid training options: label smoothing applies to the sigmoid loss only"
    )
    with pytest.raises(SystemExit) as exit_info:  # argparse: only implemented methods are offered
        main(["train", "--method", "ppo", "--data", str(path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2


def test_a_new_config_field_is_a_flag_without_writing_one(monkeypatch, capsys, tmp_path):
    """A method registered with a config subclass: its new field is a flag with default and help."""
    from dataclasses import dataclass, field

    from align.config import SFTConfig
    from align.methods import METHODS, Method, register_method
    from socialign.commands.train import method_parser

    @dataclass
    class ToyConfig(SFTConfig):
        """A throwaway method's options."""

        the_field: float = field(default=0.25, metadata={"help": "how toy the toy is"})

    monkeypatch.setitem(METHODS, "toy", METHODS["sft"])  # removed again after the test
    register_method(Method("toy", ToyConfig, "align.sft:SupervisedTrainer", "A toy.", "SFT JSONL"))

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", "toy", "--help"])
    assert exit_info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "--the-field FLOAT how toy the toy is (default: 0.25)" in shown
    assert "A throwaway method's options." in shown and "--group-by-length" in shown  # inherited fields too

    parser = method_parser(argparse.Namespace(method="toy"))
    args = parser.parse_args(["--data", "x", "--out", "y", "--the-field", "0.5", "--lora", "--lora-r", "2"])
    config = config_from_args(ToyConfig, args)
    assert (config.the_field, config.lora.r, config.lr) == (0.5, 2, pytest.approx(2e-4))
    assert config_from_args(ToyConfig, parser.parse_args(["--data", "x", "--out", "y"])).the_field == 0.25


def test_each_method_help_lists_its_own_fields(capsys):
    for method, own, other in [("sft", "--group-by-length", "--beta"), ("dpo", "--beta", "--group-by-length")]:
        with pytest.raises(SystemExit):
            main(["train", "--method", method, "--help"])
        shown = capsys.readouterr().out
        assert own in shown and other not in shown and "--lora-r" in shown and "--max-steps" in shown
