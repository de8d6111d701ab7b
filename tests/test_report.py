"""The run report (HTML, figures, escaping, headless Chromium) and the export's dataset card,
on a real simulation with the tiny random model."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from headless import chromium_binary, open_page
from PIL import Image
from test_simulation import simulate

from agents.memory import Encoder
from sandbox.dataset_card import card_text
from sandbox.export import export_run
from sandbox.mcts_phase import TreeRecord, principal_variation
from sandbox.report_figures import tree_layout
from sandbox.run_info import RunInfo
from sandbox.store import RunStore
from search.mcts import Node, Tree
from socialign.cli import main
from socialign.report import (
    agent_means,
    build_report,
    revision_stats,
    world_views,
    write_report,
)

SCENARIO = """\
name: tiny-report
description: five agents on a ring, one question a round
seed: 5
rounds: 2
questions: {{bank: social, per_round: 1}}
graph: {{generator: cycle}}
agents:
  - {{group: kind, count: 2, persona: You are kind., model: {{name: "{model}"}}, sampling: {{max_new_tokens: 8}}}}
  - {{group: blunt, count: 1, persona: You are blunt., model: {{name: "{model}"}}, sampling: {{max_new_tokens: 8}}}}
  - {{group: odd, count: 2, persona: You are odd., model: {{name: "{model}"}}, sampling: {{max_new_tokens: 8}}}}
observers: {{model: {{name: "{model}"}}}}
backscatter: {{peers: 2, max_revisions: 1, stop_at_mean_rating: 7.0, reason_tokens: 8}}
memory: {{k: 0}}
export: {{pair_margin: 0.0}}
"""
HOSTILE = "<script>alert(1)</script> <b>markup</b> \" ' &amp;"
ESCAPED = ("&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;b&gt;markup&lt;/b&gt;", "&amp;amp;")
KINDS = ("pairs", "ranked", "critiques", "sft", "spin", "ratings")
WORLD = Path("worlds") / "tiny-report-r0"  # the one world of a single-scenario run


@pytest.fixture(scope="module")
def encoder():
    return Encoder("minilm-l6")


@pytest.fixture(scope="module")
def scenario_file(tiny_model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "s.yaml"
    path.write_text(SCENARIO.format(model=tiny_model_dir))
    return path


def make_run(scenario_file, out, encoder, **kwargs) -> Path:
    simulate(scenario_file, out, encoder, **kwargs).close()
    return out


@pytest.fixture(scope="module")
def run_dir(scenario_file, encoder, tmp_path_factory) -> Path:
    return make_run(scenario_file, tmp_path_factory.mktemp("report") / "run", encoder)


CHROMIUM_HINT = "chromium is missing: run 'sudo apt-get install chromium' (make test installs it when run as root)"
# Off CI a machine without chromium skips the two browser tests with the hint; under CI=true they fail.
needs_chromium = pytest.mark.skipif(chromium_binary() is None and os.environ.get("CI") != "true",
                                    reason=CHROMIUM_HINT)


@pytest.fixture
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        pytest.fail(CHROMIUM_HINT)
    return binary


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def hostile(run_dir, tmp_path_factory) -> dict[str, Path]:
    """A copy of the run whose model text is markup, with self-play, trees, training and eval files."""
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    shutil.copytree(run_dir, run)
    answers = read(run / WORLD / "answers.jsonl")
    for index, answer in enumerate(answers):
        answer["text"], answer["question"] = f"{HOSTILE} #{index}", f"{HOSTILE}?"
    write(run / WORLD / "answers.jsonl", answers)
    ratings = read(run / WORLD / "ratings.jsonl")
    for rating in ratings:
        rating["reason"] = HOSTILE
    write(run / WORLD / "ratings.jsonl", ratings)
    write(run / "selfplay.jsonl", [
        {"agent": "kind-0", "question": HOSTILE, "samples": [HOSTILE, "plain", "other"],
         "win_rates": [0.9, 0.1, None], "position_bias": {"judge <i>x</i>": {"first_slot_rate": 0.6}}},
        {"agent": "blunt-0", "question": "q", "samples": ["a", "b"], "win_rates": [0.5, 0.5]},
    ])
    tree = Tree(id="t1", messages=[{"role": "user", "content": HOSTILE}], nodes={
        "0": Node(id="0", parent=None, n=10, value_sum=5.0, children=["0.0", "0.1"]),
        "0.0": Node(id="0.0", parent="0", step=HOSTILE, n=7, value_sum=5.6),
        "0.1": Node(id="0.1", parent="0", step="b", n=3, value_sum=0.6)}, root="0.0", done=True)
    write(run / "trees.jsonl", [TreeRecord(id="t1/step-0", round=0, phase="mcts-0", tree_id="t1", agent="kind-0",
                                           question_id="q", tree=tree).model_dump(mode="json")])
    train = root / "dpo"
    train.mkdir()
    write(train / "metrics.jsonl", [{"step": s, "epoch": s / 4, "loss": 0.7 - 0.05 * s, "rewards/margin": 0.1 * s,
                                     "rewards/accuracy": 0.5 + 0.1 * (s % 3)} for s in range(1, 5)])
    (train / "train_config.json").write_text(json.dumps({"method": "dpo", "model": HOSTILE}))
    evaluation = root / "eval"
    evaluation.mkdir()
    (evaluation / "eval.json").write_text(json.dumps({
        "scenario": "quick", "questions": 4, "judge": HOSTILE,
        "summary": {"model": {"name": HOSTILE, "scores": {"alignment": {"mean": 4.5, "low": 4.1, "high": 4.9, "n": 4}},
                              "parse_failures": 0},
                    "baseline": {"name": "base", "scores": {"alignment": {"mean": 4.0, "low": 3.5, "high": 4.5, "n": 4}},
                                 "parse_failures": 1}},
        "difference": {"alignment": {"mean": 0.5, "low": 0.2, "high": 0.8, "n": 4}},
        "pairwise": {"n": 4, "win_rate": 0.5, "tie_rate": 0.25, "loss_rate": 0.25,
                     "p_model_better": {"mean": 0.6, "low": 0.5, "high": 0.7, "n": 4}},
        "judge_free": {"metrics": {"decline_rate": {"label": HOSTILE,
                                                    "model": {"mean": 0.25, "low": 0.1, "high": 0.5, "n": 12}}}},
        "per_question": [{"question": HOSTILE, "model": {"answer": HOSTILE}}],
        "sets": [{"name": HOSTILE, "source": "advbench.csv", "questions": 100, "judge_free": {"metrics": {
            "decline_rate": {"label": "decline rate", "questions": "expected decline",
                             "model": {"mean": 0.62, "low": 0.52, "high": 0.71, "n": 100},
                             "baseline": {"mean": 0.04, "low": 0.02, "high": 0.1, "n": 100},
                             "difference": {"mean": 0.58, "low": 0.48, "high": 0.67, "n": 100}}}}}],
    }))
    return {"run": run, "train": train, "eval": evaluation}


@pytest.fixture(scope="module")
def hostile_report(hostile, tmp_path_factory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("out")
    assert main(["report", str(hostile["run"]), "--train", str(hostile["train"]), "--eval", str(hostile["eval"]),
                 "--out", str(out / "report.html"), "--png", str(out / "png")]) == 0
    return out / "report.html", out / "png", (out / "report.html").read_text(encoding="utf-8")


def test_model_text_is_escaped_everywhere_and_nothing_can_run(hostile_report):
    _, _, page = hostile_report
    assert "<script" not in page.lower()  # the page has no script at all, so none from data
    assert "<b>markup</b>" not in page and "<i>x</i>" not in page
    for escaped in ESCAPED:
        assert escaped in page
    # the hostile text reached every place model text is shown: pairs, reasons, self-play, trees, eval
    assert page.count(ESCAPED[0]) >= 6 + 2 + 2


def test_report_is_self_contained_with_every_section(hostile_report):
    _, png_dir, page = hostile_report
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(link.startswith(("data:image/png;base64,", "#")) for link in links)
    assert "url(" not in page and "@import" not in page and "http" not in "".join(links)
    for section in ("overview", "graph", "trajectories", "revision", "pairs", "selfplay", "trees", "training", "eval"):
        assert f'<section id="{section}">' in page
    assert "not in this run" not in page and "no training directory" not in page
    images = [link for link in links if link.startswith("data:")]
    figures = sorted(p.stem for p in png_dir.glob("*.png"))
    assert figures == sorted(["graph", "trajectories", "revision", "selfplay", "trees", "training", "eval"])
    assert len(images) == len(figures)
    for link in images:
        image = Image.open(io.BytesIO(base64.b64decode(link.split(",", 1)[1])))
        assert image.format == "PNG" and image.width >= 400 and image.height >= 200
    for png in png_dir.glob("*.png"):
        assert Image.open(png).format == "PNG"
    assert "Closest calls" in page and "Clearest pairs" in page
    assert "judge &lt;i&gt;x&lt;/i&gt;" in page  # position bias table
    assert "4.500 [4.100, 4.900] (n=4)" in page and "0.500 [0.200, 0.800] (n=4)" in page  # eval and paired difference
    assert "0.250 [0.100, 0.500] (n=12)" in page  # any other block of eval metrics, with intervals
    # a further question set (a public benchmark): model, baseline and paired difference in one row
    assert ("<td>decline rate (expected decline)</td><td>0.620 [0.520, 0.710] (n=100)</td>"
            "<td>0.040 [0.020, 0.100] (n=100)</td><td>0.580 [0.480, 0.670] (n=100)</td>") in page


@needs_chromium
def test_report_renders_in_headless_chromium_without_console_errors(hostile_report, chromium):
    path, png_dir, _ = hostile_report
    result = open_page(chromium, path.as_uri())
    assert result.problems == []
    assert result.images == len(list(png_dir.glob("*.png"))) and result.broken_images == 0
    assert result.title.startswith("socialign run report")


@needs_chromium
def test_the_chromium_check_catches_a_broken_page(tmp_path, chromium):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom"); missing();</script>'
                    '<img src="missing.png"></body></html>')
    result = open_page(chromium, page.as_uri())
    assert any("boom" in p for p in result.problems)
    assert any("missing is not defined" in p for p in result.problems)
    assert any("ERR_FILE_NOT_FOUND" in p for p in result.problems)
    assert result.broken_images == 1


def scores_by_answer(run: Path) -> dict[str, float]:
    """Mean ok observer score per answer on the first dimension, straight from scores.jsonl."""
    collected = defaultdict(list)
    for s in read(run / WORLD / "scores.jsonl"):
        if s["ok"] and s["dimension"] == "alignment":
            collected[s["answer_id"]].append(s["score"])
    return {a: statistics.fmean(v) for a, v in collected.items()}


def test_numbers_match_the_records(run_dir):
    store = RunStore.existing(run_dir)
    (view,) = world_views(store, RunInfo.from_manifest(store.manifest()))
    scores, answers = scores_by_answer(run_dir), read(run_dir / WORLD / "answers.jsonl")
    expected = defaultdict(list)
    for a in answers:
        expected[a["agent"]].append(scores[a["id"]])
    assert agent_means(view.exporter) == pytest.approx({k: statistics.fmean(v) for k, v in expected.items()})
    stats = revision_stats(view.exporter)
    drafts = {(a["round"], a["agent"]): a for a in answers if a["version"] == 0}
    finals = {}
    for a in answers:
        if a["version"] >= finals.get((a["round"], a["agent"]), {"version": -1})["version"]:
            finals[(a["round"], a["agent"])] = a
    assert sum(len(s.draft) for s in stats.values()) == len(drafts) == 10
    assert sum(len(s.final) for s in stats.values()) == len(finals) == 10
    revised = sorted((scores[drafts[k]["id"]], scores[f["id"]]) for k, f in finals.items() if f["version"] > 0)
    assert [x for p in sorted(p for s in stats.values() for p in s.revised) for x in p] == pytest.approx(
        [x for p in revised for x in p])
    assert len(revised) > 0
    assert_graph_rebuilt(view, run_dir / WORLD)


def assert_graph_rebuilt(view, world_dir: Path) -> None:
    """On a ring of five with two peers, an agent's raters are exactly its two neighbours, so
    this holds only if the world's graph and its seeded placement are rebuilt as they ran."""
    raters = defaultdict(set)
    for rating in read(world_dir / "ratings.jsonl"):
        raters[rating["agent"]].add(rating["rater"])
    assert len(raters) == 5
    for agent, seen in raters.items():
        node = view.world.by_id[agent].node
        assert seen == {view.world.by_node[n].id for n in view.world.graph.neighbors(node)}


def test_every_world_of_a_replicated_run_is_drawn_from_its_own_records_and_seed(scenario_file, encoder, tmp_path):
    run = make_run(scenario_file, tmp_path / "run", encoder, replicas=2)
    store = RunStore.existing(run)
    info = RunInfo.from_manifest(store.manifest())
    views = world_views(store, info)
    assert [v.name for v in views] == ["tiny-report-r0", "tiny-report-r1"]
    assert info.worlds["tiny-report-r0"].seed != info.worlds["tiny-report-r1"].seed
    placements = []
    for view in views:
        assert_graph_rebuilt(view, run / "worlds" / view.name)
        assert {a.id for a in view.exporter.answers} == {r["id"] for r in read(run / "worlds" / view.name / "answers.jsonl")}
        placements.append({a.id: a.node for a in view.world.agents})
    assert placements[0] != placements[1]  # each world drawn with its own seed
    report = build_report(run)
    anchors = [anchor for anchor, _, _ in report.sections]
    for name in ("tiny-report-r0", "tiny-report-r1"):
        assert {f"{name}-graph", f"{name}-trajectories", f"{name}-revision", f"{name}-pairs"} <= set(anchors)
    assert "tiny-report-r1 (seed" in report.html()


def test_sections_a_run_does_not_have_say_so(run_dir, tmp_path):
    report = build_report(run_dir)
    sections = {anchor: body for anchor, _, body in report.sections}
    assert "not in this run" in sections["selfplay"] and "not in this run" in sections["trees"]
    assert "no training directory given" in sections["training"]
    assert "no evaluation given" in sections["eval"]
    assert set(report.figures) == {"graph", "trajectories", "revision"}
    assert write_report(run_dir) == run_dir / "report.html" and (run_dir / "report.html").is_file()


def test_tree_layout_and_most_visited_path():
    nodes = [{"id": "r", "parent": None, "visits": 9}, {"id": "a", "parent": "r", "visits": 5},
             {"id": "b", "parent": "r", "visits": 2}, {"id": "c", "parent": "a", "visits": 4}]
    assert tree_layout(nodes) == {"r": (0.5, 0), "a": (0.0, -1), "c": (0.0, -2), "b": (1.0, -1)}
    assert [n["id"] for n in principal_variation(nodes)] == ["r", "a", "c"]


def test_bad_inputs_are_one_line_errors(run_dir, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a socialign run directory" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--train", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert f"{tmp_path}: no metrics.jsonl" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--eval", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "no eval.json" in capsys.readouterr().err
    (tmp_path / "eval.json").write_text("{not json")
    assert main(["report", str(run_dir), "--eval", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "eval.json: not valid JSON" in capsys.readouterr().err
    damaged = tmp_path / "run"
    shutil.copytree(run_dir, damaged)
    (damaged / "selfplay.jsonl").write_text('{"agent": "a"}\nnot json\n{"agent": "b"}\n')
    assert main(["report", str(damaged)]) == 2
    assert "selfplay.jsonl:2: not a JSON object" in capsys.readouterr().err
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"run_id": "x", "scenario_config": {"name": "x"}}))
    assert main(["report", str(old)]) == 2
    assert "manifest.json: written before the engine" in capsys.readouterr().err
    (old / "manifest.json").write_text(json.dumps({"run_id": "x", "scenarios": {}, "worlds": {"w": {"seed": 1}}}))
    assert main(["report", str(old)]) == 2
    assert "manifest.json: missing field 'scenario'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run_dir), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert not (tmp_path / "r.html").exists()


# -- the dataset card -------------------------------------------------------------------------


def rounded(value):
    """``value`` with every float rounded to 9 digits (nested dicts and lists too)."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def test_export_writes_a_card_datasets_loads_offline(run_dir, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    counts = export_run(run_dir)
    export = run_dir / "export"
    card = (export / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert all(counts[kind] > 0 for kind in KINDS)
    assert [c["config_name"] for c in header["configs"]] == list(KINDS)
    for kind in KINDS:
        loaded = datasets.load_dataset(str(export), kind, cache_dir=str(tmp_path / "cache"))["train"]
        rows = read(export / f"{kind}.jsonl")
        assert loaded.num_rows == counts[kind] == len(rows)
        assert rounded(loaded[0]["meta"]) == rounded(rows[0]["meta"])  # datasets' JSON reader parses floats to ~1 ulp
    pairs = datasets.load_dataset(str(export), cache_dir=str(tmp_path / "cache"))["train"]  # the default config
    assert set(pairs.column_names) >= {"prompt", "chosen", "rejected"}
    body = card.split("---\n", 2)[2]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "`tiny-report`: five agents on a ring, one question a round" in body
    seed = manifest["worlds"]["tiny-report-r0"]["seed"]
    assert f"| worlds (seed) | `tiny-report-r0` ({seed}) |" in body and manifest["identity"]["models"][0]["name"] in body
    assert f"| `tiny-report` sha256 | `{manifest['scenarios']['tiny-report']['sha256']}` |" in body
    for kind in KINDS:
        assert f"| `{kind}` | `{kind}.jsonl` | {counts[kind]:,} |" in body
    assert "`pair_margin` 0.0" in body


def test_card_leaves_empty_kinds_out_of_configs_and_lists_filters(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    card = card_text(manifest, {"pairs": 0, "sft": 3}, filters={"too_long": 7})
    header = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in header["configs"]] == ["sft"]
    assert "No rows (so no config): `pairs`." in card
    assert "- `too_long` dropped 7 rows" in card


def test_browser_setup_without_chromium_or_root_names_the_command_and_installs_nothing(tmp_path):
    """`make test`'s setup step on a fresh machine where the user is not root: one line with the
    command to run, exit 0 (the browser tests then skip with the same hint)."""
    import subprocess

    bin_dir = tmp_path / "bin"  # a PATH with no chromium, and `id -u` answering as a normal user
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    script = Path(__file__).parent / "browser_setup.sh"
    done = subprocess.run(["/bin/bash", str(script)], capture_output=True, text=True, check=False,
                          env={"PATH": str(bin_dir)}, timeout=30)
    assert done.returncode == 0, done.stderr
    hint = "chromium is missing: run 'sudo apt-get install chromium' for the report's two browser tests"
    assert done.stdout.strip().splitlines() == [f"{hint} (they skip until then)"]
