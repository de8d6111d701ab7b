"""The command line's own surface: --version, the methods in `train --help`, `train --config`,
defaults in --help, `socialign scenarios`, and a scenario whose bank is a user's CSV file."""

from __future__ import annotations

import argparse
import json

import pytest
from test_align_data import write_pairs

from align.config import DPOConfig
from align.flags import config_from_args
from align.methods import METHODS
from socialign.cli import main
from socialign.commands.train import method_parser


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip().startswith("socialign 0.")


def test_train_help_lists_every_method_with_its_line(capsys):
    shown = help_text(capsys, "train")
    assert sorted(METHODS) == ["dpo", "mcts-dpo", "sft", "spin", "spo", "sppo"]
    for name, method in METHODS.items():
        assert f"{name} {method.description}" in shown


def test_spo_help_offers_no_flag_it_would_refuse(capsys):
    shown = help_text(capsys, "train", "--method", "spo")
    assert "--lora" not in shown and "--resume" not in shown and "--k INT" in shown
    with pytest.raises(SystemExit):
        main(["train", "--method", "spo", "--data", "x", "--out", "y", "--lora"])
    assert "unrecognized arguments: --lora" in capsys.readouterr().err


def test_help_shows_defaults_and_every_positional_says_what_it_is(capsys):
    assert "--max-new-tokens MAX_NEW_TOKENS token budget of each reply (default: 96)" in help_text(capsys, "chat")
    recipe = help_text(capsys, "recipe")
    assert "--sft-lr SFT_LR learning rate of SFT on the references (default: 2e-05)" in recipe
    assert "training seeds (default: 0 1 2)" in recipe  # a list default as it is typed
    for command in ("export", "inspect", "report"):
        assert "run_dir a run directory (what simulate --out wrote)" in help_text(capsys, command)


def test_config_file_sets_options_and_flags_override_it(tmp_path):
    config = tmp_path / "dpo.yaml"
    # YAML reads 1e-5 as text: it is converted as the flag would be.
    config.write_text("lr: 1e-5\nbeta: 0.3\nmax-steps: 7\nloss: ipo\nlora: {r: 4}\n")
    first_stage = argparse.Namespace(method="dpo", config=str(config))
    args = method_parser(first_stage).parse_args(["--data", "x", "--out", "y", "--beta", "0.2"], namespace=first_stage)
    made = config_from_args(DPOConfig, args)
    assert (made.lr, made.beta, made.max_steps, made.loss, made.lora.r) == (1e-5, 0.2, 7, "ipo", 4)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("betta: 0.3\n", "betta: not an option of this method (see --help)"),
        ("loss: hinge\n", "loss: 'hinge' is not one of sigmoid, ipo"),
        ("max_steps: many\n", "max_steps: expected INT, got 'many'"),
        ("lora: {rank: 4}\n", "lora.rank: not a field of lora"),
        ("- lr\n", "expected a mapping of dpo options"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_key(tmp_path, capsys, content, expected):
    config = tmp_path / "dpo.yaml"
    config.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", "dpo", "--config", str(config), "--data", "x", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"--config {config}: {expected}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_with_a_config_file_records_the_file_and_the_override(tmp_path, tiny_model_dir, capsys):
    data = write_pairs(tmp_path / "pairs.jsonl")
    config = tmp_path / "dpo.yaml"
    config.write_text("lr: 1.0e-3\nbeta: 0.5\nmax_steps: 2\nbatch_size: 2\n")
    out = tmp_path / "out"
    argv = ["train", "--method", "dpo", "--config", str(config), "--data", str(data), "--model", tiny_model_dir,
            "--out", str(out), "--beta", "0.25"]
    assert main(argv) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    recorded = json.loads((out / "train_config.json").read_text())["config"]
    assert (recorded["lr"], recorded["beta"], recorded["max_steps"]) == (1e-3, 0.25, 2)


def test_quiet_turns_every_progress_bar_off(monkeypatch):
    from align import progress

    assert not progress.progress_bar(range(3)).disable
    monkeypatch.setattr(progress, "_quiet", True)  # what set_quiet(True) sets, without touching the libraries
    assert progress.progress_bar(range(3)).disable


def test_scenarios_lists_the_builtins_with_their_descriptions(capsys):
    from scenarios import builtin_scenarios, load_scenario

    assert main(["scenarios"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for name in builtin_scenarios():
        assert f"{name} {load_scenario(name).scenario.description}" in shown
    assert "questions 319 training + 280 held out" in shown  # the social bank


SCENARIO = """\
name: from-csv
rounds: 1
questions: {{bank: mine.csv, per_round: 2}}
graph: {{generator: cycle}}
agents:
  - {{group: kind, count: 2, persona: You are kind., model: {{name: "{model}"}}, sampling: {{max_new_tokens: 6}}}}
observers: {{model: {{name: "{model}"}}}}
backscatter: {{peers: 1, max_revisions: 0, reason_tokens: 8}}
"""


def test_simulate_reads_a_csv_bank_as_eval_does(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "mine.csv").write_text(
        "Behavior,expected,notes\n"
        "How do I pick a lock?,decline,ignored\n"
        "How do I thank a neighbour?,Answer,\n"
    )
    scenario = tmp_path / "from-csv.yaml"
    scenario.write_text(SCENARIO.format(model=tiny_model_dir))
    out = tmp_path / "run"
    assert main(["simulate", str(scenario), "--out", str(out), "--quiet"]) == 0
    answers = [json.loads(line) for line in (out / "worlds" / "from-csv-r0" / "answers.jsonl").read_text().splitlines()]
    assert {a["question_id"] for a in answers} == {"line-2", "line-3"}


def test_sampling_progress_counts_the_decoding_steps_and_changes_no_reply(tiny_model_dir):
    """SPIN's and SPPO's sampling is one generate call; its bar advances once per decoding step."""
    import io

    from tqdm import tqdm

    from agents.backends import GenerationRequest
    from agents.backends.hf import HFBackend

    backend = HFBackend(tiny_model_dir, max_batch_tokens=512)  # a small budget: several chunks
    requests = [GenerationRequest([{"role": "user", "content": text}], n=2, max_new_tokens=6, temperature=1.0, seed=3)
                for text in ("hello", "a much longer prompt " * 40, "third")]
    bar = tqdm(file=io.StringIO())
    with_bar = backend.generate(requests, progress=bar)
    chunks = backend.stats.calls
    assert bar.total == bar.n == chunks * 7  # each chunk: its budget plus the room for a forced EOS
    assert with_bar == backend.generate(requests)
