"""scripts/bench_vs_official.py: the port's worker on a tiny model and canvas reports its calls,
the config pairing finds the official file of the same name, and the assembly script refuses a
missing checkout by name. The official side needs torch and the official code (not installed for
the suite); its figures in the README come from running the script by hand."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_vs_official import RESULT, official_config  # noqa: E402
from test_bench_train import TINY  # noqa: E402


def test_port_worker_reports_first_and_later_calls(tmp_path):
    cmd = [sys.executable, "scripts/bench_vs_official.py", "--worker", "port", "--official-root", str(tmp_path),
           "--configs", "config/quickstart.yaml", "--height", "64", "--width", "64", "--repeat", "2", *TINY]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "FOCUS_DETR_COMPILE_CACHE": "off"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    assert len(lines) == 1, out.stdout[-3000:]
    result = json.loads(lines[0][len(RESULT):])
    assert len(result["calls_s"]) == 2 and all(s > 0 for s in result["calls_s"])
    assert result["first_s"] > max(result["calls_s"])  # the first call compiles the graph
    assert result["version"].startswith("MindSpore ") and "graph mode" in result["version"]


@pytest.mark.parametrize("config, family", [("config/focus_detr_r50_4scale_36ep.yaml", "focus_detr_resnet"),
                                            ("config/focus_detr_swin_tiny_224_4scale_36ep.yaml", "focus_detr_swin")])
def test_official_config_of_the_same_name(tmp_path, config, family):
    name = Path(config).stem
    path = tmp_path / "detrex" / "projects" / "focus_detr" / "configs" / family / f"{name}.py"
    with pytest.raises(SystemExit, match=name):
        official_config(str(tmp_path), config)
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert official_config(str(tmp_path), config) == str(path)


def test_prepare_official_names_the_missing_checkout(tmp_path):
    out = subprocess.run(["bash", "scripts/prepare_official.sh", str(tmp_path / "detrex"), str(tmp_path / "noah"),
                          str(tmp_path / "detectron2"), str(tmp_path / "out")], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert f"{tmp_path / 'detrex'}/projects not found" in out.stderr
