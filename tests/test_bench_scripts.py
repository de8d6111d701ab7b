"""Every benchmark script starts as its docstring says (`python bench/NAME.py`): imports resolve
and the arguments parse. The benchmarks themselves are timings, run by hand, never in tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_script_starts(script):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, check=False,
                          timeout=300, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_gpu_bench_runs_tiny_on_cpu(tmp_path):
    """bench/gpu.py (the GPU run, prepared on CPU) end to end at its tiny sizes in fp32: the tokenizer
    folder is made from the registry, and the last table has every part's row, none failed."""
    tokenizer = tmp_path / "tokenizer"
    command = [sys.executable, str(BENCH / "gpu.py"), "--size", "tiny", "--precision", "fp32", "--cap", "150",
               "--tokenizer", str(tokenizer), "--work", str(tmp_path / "work")]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert (tokenizer / "tokenizer.json").is_file() and (tokenizer / "chat_template.jinja").is_file()
    title, header, *lines = done.stdout.split("\n== bench/gpu.py: ", 1)[1].strip().splitlines()
    assert "device: CPU" in title or "(cuda)" in title
    assert "torch " in title and " UTC" in title
    assert header.split() == ["part", "seconds", "goal", "met", "result"]
    rows = {line.split()[0]: line for line in lines}
    assert list(rows) == ["build", "generate", "replicas", "dpo", "sft"]
    assert not [line for line in lines if "FAILED" in line or "TIMEOUT" in line]
    assert "same tokens" in rows["replicas"] and "merged model chats" in rows["sft"]
