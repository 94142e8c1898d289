"""The examples run (briefly) and train: the loss goes down with either implementation."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.parametrize("script,args", [
    ("char_lm.py", ["--steps", "12", "--batch", "8", "--seq-len", "32", "--hidden", "64",
                    "--sample", "20"]),
    ("packed_classifier.py", ["--steps", "12", "--batch", "16", "--hidden", "32"]),
])
def test_example_trains_with_both_implementations(script, args):
    out = _run(script, *args)
    for impl in ("rnnkern", "torch"):
        losses = [float(x) for x in re.findall(rf"\[{impl}\] step +\d+ +loss ([\d.]+)", out)]
        assert len(losses) >= 2 and losses[-1] < losses[0], out
    assert "the speed of torch.nn" in out
