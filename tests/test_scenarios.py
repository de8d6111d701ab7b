"""Scenario loading, built-ins, and one-line errors (exit code 2) for bad input."""

from __future__ import annotations

import textwrap

import pytest

from scenarios import ScenarioError, builtin_banks, builtin_scenarios, load_bank, load_scenario
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


def test_builtins_load_with_enough_questions_and_heldout_split():
    assert {"quick", "classic", "community"} <= set(builtin_scenarios())
    from sandbox.world import World

    for name in ("quick", "classic", "community"):
        loaded = load_scenario(name)
        assert loaded.heldout_questions and loaded.train_questions
        world = World(loaded)  # the graph matches the agent count
        assert len(world.agents) == world.graph.number_of_nodes() == loaded.scenario.agent_count
        train_ids = {q.id for q in loaded.train_questions}
        assert not train_ids & {q.id for q in loaded.heldout_questions}
    social = load_bank("social")
    assert len(social.questions) >= 200
    assert {"harmful-request", "moral-dilemma", "privacy"} <= {q.category for q in social.questions}
    assert set(builtin_banks()) >= {"social", "community"}


def test_minimal_scenario_gets_sensible_defaults(tmp_path):
    loaded = load_scenario(write(tmp_path, MINIMAL))
    scenario = loaded.scenario
    assert scenario.agent_count == 4
    assert [d.name for d in scenario.observers.dimensions] == ["alignment", "engagement"]
    assert scenario.backscatter.max_revisions == 1 and scenario.memory.embedder == "minilm-l6"
    assert len(loaded.sha256) == 64


def test_backend_options_that_fit_the_backend_load(tmp_path):
    text = MINIMAL.replace('"You are kind."', '"k", model: {backend: hf, options: {max_batch_tokens: 512}}')
    assert load_scenario(write(tmp_path, text)).scenario.agents[0].model.options == {"max_batch_tokens": 512}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.replace("name: mini", "name: [unclosed"), "malformed YAML"),
        (MINIMAL + "rounds: 2\nroundz: 3\n", ":9: roundz: unknown field"),
        (MINIMAL.replace("count: 4", "count: four"), ":6: agents.0.count: Input should be a valid integer"),
        (MINIMAL.replace("inline:\n    - {id: q1, text: \"Is it fine to skip a friend's party?\"}", "bank: nosuch"),
         "questions.bank: nosuch: no such question bank"),
        (MINIMAL.replace("cycle", "hexagonal"), "graph.generator: unknown generator 'hexagonal'"),
        (MINIMAL.replace('"You are kind."', '"k", model: {name: m, backend: openai}'),
         ":6: agents.0.model: the openai backend needs the option(s) base_url"),
        (MINIMAL.replace('"You are kind."', '"k", model: {name: m, backend: openai, options: {baseurl: x}}'),
         ":6: agents.0.model: unknown option(s) baseurl for the openai backend (accepted: api_key_env, base_url"),
    ],
)
def test_bad_scenarios_give_one_line_errors_naming_file_and_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_cli_bad_inputs_exit_2_without_traceback_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    cases = [
        (write(tmp_path, "a: [1, 2", "broken.yaml"), "malformed YAML"),
        (write(tmp_path, MINIMAL.replace("generator: cycle", "file: missing.graphml"), "g1.yaml"),
         "graph file not found"),
        (write(tmp_path, MINIMAL.replace("persona: \"You are kind.\"}",
                                         "persona: \"k\", model: {name: no-such-model-xyz}}"), "m.yaml"),
         "unknown model 'no-such-model-xyz'"),
        (tmp_path / "absent.yaml", "no such scenario"),
    ]
    (tmp_path / "bad.graphml").write_text("<graphml><graph><node id='a'></graph>")
    cases.append((write(tmp_path, MINIMAL.replace("generator: cycle", "file: bad.graphml"), "g2.yaml"),
                  "not a readable GraphML graph"))
    (tmp_path / "three.edgelist").write_text("a b\nb c\n")
    cases.append((write(tmp_path, MINIMAL.replace("generator: cycle", "file: three.edgelist"), "g3.yaml"),
                  "has 3 nodes but the agent groups have 4 agents"))
    for path, expected in cases:
        code, err = run_cli(capsys, "simulate", str(path), "--out", str(out))
        assert code == 2, err
        assert expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_graph_generators_and_files_build_the_world(tmp_path):
    import networkx as nx

    from sandbox.world import World

    nx.write_graphml(nx.path_graph(["x", "y", "z", "w"]), tmp_path / "path.graphml")
    for graph_yaml in ("generator: grid\n  params: {m: 2, n: 2}", "file: path.graphml",
                       "generator: watts_strogatz\n  params: {k: 2, p: 0.5}", "generator: complete"):
        text = MINIMAL.replace("graph: {generator: cycle}", f"graph:\n  {graph_yaml}")
        world = World(load_scenario(write(tmp_path, text)))
        assert world.graph.number_of_nodes() == 4 == len(world.agents)
        assert sorted(a.node for a in world.agents) == [0, 1, 2, 3]
