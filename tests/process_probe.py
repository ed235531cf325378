"""Run Python code in a fresh interpreter with the repository importable and one environment
variable unset or set: for the process settings ``import src`` applies (``src.runtime``)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code, variable, value=None, timeout=300):
    """The finished process of ``python -c code`` with ``variable`` removed from the environment,
    or set to ``value``; its exit status must be 0."""
    env = {k: v for k, v in os.environ.items() if k != variable}
    if value is not None:
        env[variable] = value
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out
