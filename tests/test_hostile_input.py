"""Hostile input: every file and number is bounded before work starts (one line, exit code 2)."""

from __future__ import annotations

import textwrap

import pytest

from agents.bounded import MAX_DEPTH, BoundedInputError, parse_json_line
from scenarios import ScenarioError, load_scenario
from socialign.cli import main

MINIMAL = """\
name: mini
questions:
  inline:
    - {id: q1, text: "Is it fine to skip a friend's party?"}
agents:
  - {group: a, count: 4, persona: "You are kind."}
graph: {generator: cycle}
"""


def write(tmp_path, text: str, name: str = "scenario.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def billion_laughs() -> str:
    lines = ["name: mini", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: &a [*a]\n", ":1: an alias refers to a value that contains it (a cycle)"),
        ("a: &m {b: *m}\n", "a cycle"),
        (billion_laughs(), "aliases expand to more than 200,000 values"),
        (MINIMAL.replace("name: mini", "name: mini\nseed: " + "9" * 5000), ":2: the number 999999999999... is too large"),
        (MINIMAL.replace("count: 4", "count: 1000000000"), "agents.0.count: Input should be less than or equal to 100000"),
        ("x: " + "[" * 100 + "]" * 100 + "\n", f"nested deeper than {MAX_DEPTH} levels"),
        (MINIMAL.replace("count: 4,", "count: 60000, persona: p}\n  - {group: b, count: 60000,"),
         "the agent groups have 120,000 agents; at most 100,000 fit one machine"),
        (MINIMAL.replace("count: 4", "count: 200") + "rounds: 60000\n", "200 agents x 60,000 rounds x 1 replicas"),
        (MINIMAL.replace('"You are kind."', '"k", sampling: {temperature: .nan}'), "temperature: Input should be a finite number"),
        (MINIMAL.replace('"You are kind."', '"k", sampling: {max_new_tokens: 1000000}'), "max_new_tokens: Input should be less than"),
    ],
)
def test_hostile_scenarios_fail_on_one_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert str(path) in message and expected in message, message
    assert "\n" not in message


def test_alias_bomb_in_a_question_bank_is_refused(tmp_path):
    bank = billion_laughs().replace("name: mini", "name: bomb\nquestions: [{id: q, text: t}]")
    write(tmp_path, bank, "bank.yaml")
    path = write(tmp_path, MINIMAL.replace('inline:\n    - {id: q1, text: "Is it fine to skip a friend\'s party?"}',
                                           "bank: bank.yaml"))
    with pytest.raises(ScenarioError, match=r"questions.bank: .*bank.yaml:\d+: aliases expand"):
        load_scenario(path)


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_graph_generator_params_larger_than_the_world_are_refused_before_building(tmp_path, capsys):
    out = tmp_path / "run"
    for params, expected in [
        ("generator: grid, params: {m: 100000, n: 100000}", "a 100000 x 100000 grid has 10,000,000,000 nodes"),
        ("generator: watts_strogatz, params: {k: 1000000000, p: 0.1}", "graph.params.k: 1,000,000,000 is more than"),
    ]:
        path = write(tmp_path, MINIMAL.replace("generator: cycle", params))
        code, err = run_cli(capsys, "simulate", str(path), "--out", str(out))
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert not out.exists()


def test_a_graphml_entity_bomb_is_refused(tmp_path, capsys):
    entities = '<!ENTITY a0 "xxxxxxxxxx">' + "".join(
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10)
    )
    (tmp_path / "bomb.graphml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE graphml [{entities}]><graphml><graph edgedefault="undirected">'
        '<node id="&a9;"/></graph></graphml>'
    )
    path = write(tmp_path, MINIMAL.replace("generator: cycle", "file: bomb.graphml"))
    code, err = run_cli(capsys, "simulate", str(path), "--out", str(tmp_path / "run"))
    assert code == 2 and "bomb.graphml: not a readable GraphML graph" in err


def test_out_naming_a_file_exits_2_and_leaves_the_file_alone(tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    for argv in (["simulate", "quick", "--out", str(existing)],
                 ["simulate", "quick", "--out", str(existing / "run")],
                 ["eval", "--model", "x", "--out", str(existing)]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "is a file" in err and "Traceback" not in err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "quick", "--out", "x", "--rounds", "1000000000000"],
        ["simulate", "quick", "--out", "x", "--seed", "9" * 5000],
        ["simulate", "quick", "--out", "x", "--seed", "-1"],
        ["eval", "--model", "m", "--max-new-tokens", "99999999"],
        ["chat", "--temperature", "nan", "hi"],
    ],
)
def test_cli_numbers_out_of_bounds_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (b'{"weight": ' + b"9" * 5000 + b"}", "too large"),
        (b'{"weight": NaN}', "NaN is not a number JSON allows"),
        (b'{"a": 1', "not valid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_json_lines_are_bounded(line, expected):
    with pytest.raises(BoundedInputError, match=expected) as error:
        parse_json_line(line, "pairs.jsonl:3")
    assert str(error.value).startswith("pairs.jsonl:3: ")


def test_deep_but_legal_json_and_strings_with_brackets_still_parse():
    assert parse_json_line(b'{"text": "' + b"[" * 500 + b'"}', "f:1") == {"text": "[" * 500}
    assert parse_json_line(b"[[[1]]]", "f:1") == [[[1]]]


@pytest.mark.parametrize(
    ("config", "expected"),
    [(b"[" * 5000 + b"]" * 5000, "nested deeper than"), (b"[1, 2]", "must hold a JSON object"),
     (b'{"hidden_size": ' + b"7" * 5000 + b"}", "too large")],
)
def test_model_directories_with_hostile_configs_exit_2(tmp_path, capsys, config, expected):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(config)
    code, err = run_cli(capsys, "chat", "--model", str(model), "hi")
    assert code == 2 and expected in err and "Traceback" not in err, err


def test_hostile_pairs_files_exit_2_naming_the_line(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    good = '{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], ' \
           '"rejected": [{"role": "assistant", "content": "b"}]}'
    for bad, expected in [
        ("[" * 100_000 + "]" * 100_000, ":2: nested deeper than"),
        (good.replace('"q"}]', '"q"}], "weight": ' + "9" * 5000), ":2: the number"),
    ]:
        pairs.write_text(good + "\n" + bad + "\n")
        code, err = run_cli(capsys, "train", "--method", "dpo", "--data", str(pairs), "--out", str(tmp_path / "out"))
        assert code == 2 and f"{pairs}{expected}" in err and "Traceback" not in err, err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("manifest", [b"[" * 5000 + b"]" * 5000, b"[1, 2]", b"{not json"])
def test_hostile_run_manifests_exit_2(tmp_path, capsys, manifest):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_bytes(manifest)
    for command in ("inspect", "export"):
        code, err = run_cli(capsys, command, str(run))
        assert code == 2 and "manifest" in err and "Traceback" not in err, err
    assert (run / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [("--lora-r", "1000000000", "LoRA rank must be <="), ("--max-steps", "99999999999", "max steps must be in"),
     ("--batch-size", "10000000", "batch size and gradient accumulation must be <="),
     ("--max-length", "99999999999", "max length must be <=")],
)
def test_training_numbers_too_large_for_the_machine_exit_2(tmp_path, capsys, flag, value, expected):
    argv = ["train", "--method", "dpo", "--data", str(tmp_path), "--out", str(tmp_path / "out"), flag, value]
    if flag == "--lora-r":
        argv.append("--lora")
    code, err = run_cli(capsys, *argv)
    assert code == 2 and expected in err and "Traceback" not in err, err
