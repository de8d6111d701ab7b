"""`simulate --ray`: worlds sharded across Ray actors on a real local cluster (no mocks).

One local Ray (2 CPUs, module scope) serves every test; the CLI joins it by address as a user
joins a cluster. Under CI=true a missing Ray fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_engine import assert_same_records
from test_simulation import SCENARIO

from agents.memory import Encoder
from sandbox.simulation import Simulation, plan_worlds
from scenarios import load_scenario
from socialign.cli import main

KINDS = ("answers", "ratings", "scores", "verdicts")
WORLDS = ("tiny-r0", "tiny-r1")


@pytest.fixture(scope="module")
def ray_address():
    import ray  # the 'ray' extra, which `make test` installs

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def scenario_file(tiny_model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "tiny.yaml"
    path.write_text(SCENARIO.format(model=tiny_model_dir))
    return path


def cli(scenario_file, out, address, *extra) -> list[str]:
    return [sys.executable, "-m", "socialign.cli", "simulate", str(scenario_file), "--out", str(out),
            "--replicas", "2", "--ray", address, "--workers", "2", "--quiet", *extra]


def wait_for(condition, what: str, seconds: float = 180.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def worker_pid(out: Path, world: str) -> int | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-replace
        return None
    return next((w["pid"] for w in manifest.get("ray", {}).get("workers", []) if world in w["worlds"]), None)


def markers(out: Path, world: str) -> int:
    path = out / "worlds" / world / "progress.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_kill_a_ray_actor_then_resume_equals_one_process_and_reads_as_one_run(
        ray_address, scenario_file, tmp_path, capsys):
    local = tmp_path / "local"
    Simulation(plan_worlds([load_scenario(scenario_file)], replicas=2), local, encoder=Encoder("minilm-l6"),
               show_progress=False).run()

    out = tmp_path / "ray"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(cli(scenario_file, out, ray_address), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    pid = wait_for(lambda: markers(out, "tiny-r0") >= 3 and worker_pid(out, "tiny-r0"), "round 1 of tiny-r0")
    os.kill(pid, signal.SIGKILL)  # the actor's process, not the driver
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 2
    assert "a Ray worker died" in err and f"pid {pid}" in err and "--resume" in err
    assert 3 <= markers(out, "tiny-r0") < 12, "the kill must land mid-run"

    resumed = subprocess.run(cli(scenario_file, out, ray_address, "--resume"), check=False, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for world in WORLDS:
        for kind in KINDS:
            assert_same_records(local / "worlds" / world / f"{kind}.jsonl", out / "worlds" / world / f"{kind}.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    expected = json.loads((local / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rounds_completed"] == 4
    assert manifest["counts"] == expected["counts"] and set(manifest["worlds"]) == set(WORLDS)
    assert {w for worker in manifest["ray"]["workers"] for w in worker["worlds"]} == set(WORLDS)
    assert len({worker["pid"] for worker in manifest["ray"]["workers"]}) == 2  # one actor per world here
    # Generation counters come from shards that finished: the killed session's are not in the totals.
    assert 0 < manifest["tokens_generated"] <= expected["tokens_generated"]

    assert main(["export", str(out)]) == 0
    assert main(["inspect", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-r0" in printed and "tiny-r1" in printed
    ratings = [json.loads(line) for line in (out / "export" / "ratings.jsonl").read_text().splitlines()]
    assert {row["meta"]["id"].split("/")[0] for row in ratings} == set(WORLDS)


def test_ray_flags_without_ray_are_a_one_line_error(scenario_file, tmp_path, capsys):
    assert main(["simulate", str(scenario_file), "--out", str(tmp_path / "run"), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "need --ray" in err and len(err.splitlines()) == 1 and not (tmp_path / "run").exists()
