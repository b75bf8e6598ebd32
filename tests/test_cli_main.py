"""The `pes` entry point itself: the one place the CLI tests start a Python process on purpose."""

from __future__ import annotations

import pytest

from cli_support import pes

NOUNS = ("init", "db", "enumerate", "calc", "basis", "model", "simulate", "campaign", "retrain")


def test_python_dash_m_starts_and_lists_every_noun(pes_home):
    proc = pes("--help", process=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: pes")
    for noun in NOUNS:
        assert f"\n    {noun}" in proc.stdout, noun


@pytest.mark.parametrize(
    "args, code",
    [(("basis", "count", "--cluster", "no-such-cluster"), 2), (("model", "--no-such-flag"), 2), (("--help",), 0)],
)
def test_in_process_runs_match_a_real_process(pes_home, args, code):
    """The in-process runner gives what a real `python -m perovskite_pes` gives: exit status, output,
    one-line errors."""
    real = pes(*args, process=True)
    mine = pes(*args)
    assert real.returncode == mine.returncode == code
    assert mine.stdout == real.stdout
    if code:
        assert mine.stderr.strip().splitlines()[-1] == real.stderr.strip().splitlines()[-1]
        assert "Traceback" not in real.stderr
