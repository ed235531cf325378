"""The oneDNN ISA cap is applied at import time on x86 unless the user chose a value."""
import platform

import pytest
from process_probe import run_python

PROBE = "import os, src, mindspore; print(os.environ.get('ONEDNN_MAX_CPU_ISA'))"


def run_probe(env_value):
    return run_python(PROBE, "ONEDNN_MAX_CPU_ISA", env_value, timeout=120).stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the cap only applies to x86")
def test_avx2_cap_set_on_import():
    assert run_probe(None) == "AVX2"


def test_user_value_is_kept():
    assert run_probe("AVX512_CORE") == "AVX512_CORE"
