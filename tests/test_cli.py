"""Command-line arguments: a bad number or a missing backend option exits 2 with one clear line."""

from __future__ import annotations

import pytest

from socialign.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["simulate", "quick", "--out", "{out}", "--rounds", "0"], "argument --rounds: must be >= 1, got 0"),
        (["chat", "--max-new-tokens", "-1", "hi"], "argument --max-new-tokens: must be >= 1, got -1"),
        (["chat", "--temperature", "-0.5", "hi"], "argument --temperature: must be >= 0.0, got -0.5"),
        (["chat", "--temperature", "warm", "hi"], "argument --temperature: invalid float value: 'warm'"),
        (["eval", "--model", "m", "--limit", "-3"], "argument --limit: must be >= 1, got -3"),
        (["eval", "--model", "m", "--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
    ],
)
def test_bad_numbers_are_refused_before_anything_runs(argv, expected, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main([part.format(out=out) for part in argv])
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_openai_chat_without_a_server_url_says_which_flag_is_missing(capsys):
    assert main(["chat", "--backend", "openai", "--model", "m", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "socialign chat: error: --backend openai needs --base-url "
        "(the server's API root, e.g. http://127.0.0.1:8000/v1)"
    )
