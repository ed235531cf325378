"""scripts/profile_ops.py on the quick-start model at a small canvas: MindSpore's profiler runs on
the compiled inference net and both tables add up to the total it prints. (The source-line table
needs the compile's IR, about 1.2 GB even at this size, and is left to manual runs.)"""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| ([0-9.]+) \| ([0-9]+) \| (.+) \|$")


def tables(text):
    """{title: [(ms per call, kernels per call, what)]} of the script's markdown tables."""
    found, title = {}, None
    for line in text.splitlines():
        if line.startswith("By "):
            title = line
            found[title] = []
        elif title and ROW.match(line):
            ms, count, what = ROW.match(line).groups()
            found[title].append((float(ms), int(count), what))
    return found


def test_profile_tables_add_up_to_the_total():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "scripts/profile_ops.py", "--config", "config/quickstart.yaml",
                          "--height", "320", "--width", "480", "--calls", "1", "--top", "1000", "--no-lines"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    total = float(re.search(r"1 calls, ([0-9.]+) ms of kernels per call", out.stdout).group(1))
    found = tables(out.stdout)
    assert set(found) == {"By operator type", "By Cell scope"}, out.stdout[-3000:]
    by_type = {what: (ms, count) for ms, count, what in found["By operator type"]}
    assert {"Conv2D", "MatMul", "Custom"} <= set(by_type)  # the backbone, the transformer, the kernels
    assert all(count > 0 for _, count in by_type.values())
    for title, rows in found.items():  # every kernel in exactly one row (rows are rounded to 0.1 ms)
        assert abs(sum(ms for ms, _, _ in rows) - total) <= 1 + 0.05 * len(rows), title
    scopes = {what for _, _, what in found["By Cell scope"]}
    assert any(s.startswith("model/backbone") for s in scopes) and any(s.startswith("model/transformer")
                                                                        for s in scopes), scopes
