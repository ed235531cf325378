"""The oneDNN ISA cap is applied at import time on x86 unless the user chose a value."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = "import os, src, mindspore; print(os.environ.get('ONEDNN_MAX_CPU_ISA'))"


def run_probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if env_value is not None:
        env["ONEDNN_MAX_CPU_ISA"] = env_value
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the cap only applies to x86")
def test_avx2_cap_set_on_import():
    assert run_probe(None) == "AVX2"


def test_user_value_is_kept():
    assert run_probe("AVX512_CORE") == "AVX512_CORE"
