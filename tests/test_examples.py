"""Smoke test of the examples: each runs its --quick configuration in a subprocess, exits 0 and
writes its plot. One of them runs --compare, which trains with both implementations."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.mark.parametrize("script, plot, extra", [
    ("adding_problem.py", "adding_problem.png", ["--compare"]),
    ("char_lm.py", "char_lm.png", []),
    ("seq2seq_attention.py", "seq2seq_sort.png", []),
    ("ctc_recognizer.py", "ctc_recognizer.png", []),
])
def test_example_runs_and_writes_its_plot(tmp_path, script, plot, extra):
    # One thread: these tiny models gain nothing from more, and a machine busy with other
    # work (parallel CI jobs) would otherwise make every step wait on a descheduled thread.
    cmd = [sys.executable, os.path.join(EXAMPLES, script), "--quick", "--threads", "1",
           "--out", str(tmp_path)] + extra
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / plot).stat().st_size > 0
    assert "training time (s)" in run.stdout
    if "--compare" in extra:
        assert "speedup (torch time / fastrnn time)" in run.stdout
