"""The node layout of the msrun launchers (``msrun_layout`` in scripts/launcher_common.sh): the
msrun options each node gets, and wrong combinations refused before anything starts."""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYOUT_VARS = ("NODE_NUM", "WORKER_NUM", "LOCAL_WORKER_NUM", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "DEVICE_NUM")


def clean_env(**layout):
    env = {k: v for k, v in os.environ.items() if k not in LAYOUT_VARS}
    env.update({k: str(v) for k, v in layout.items()})
    return env


def layout(local, **env):
    script = (f'source scripts/launcher_common.sh; msrun_layout {local} 8118 out/msrun_log; '
              'printf "%s\\n" "${MSRUN_ARGS[@]}"; echo "workers=$MSRUN_WORKERS"')
    out = subprocess.run(["bash", "-c", script], cwd=REPO, env=clean_env(**env), capture_output=True, text=True)
    return out.returncode, out.stdout.split(), out.stderr


def test_single_node_default():
    rc, args, _ = layout(8)
    assert rc == 0
    assert args == ["--worker_num=8", "--local_worker_num=8", "--master_addr=127.0.0.1", "--master_port=8118",
                    "--node_rank=0", "--log_dir=out/msrun_log", "--join=True", "--cluster_time_out=600", "workers=8"]


@pytest.mark.parametrize("env", [dict(NODE_NUM=2), dict(WORKER_NUM=16)])
def test_two_nodes_of_eight(env):
    rc, args, _ = layout(8, NODE_RANK=1, MASTER_ADDR="10.0.0.1", MASTER_PORT=9000, **env)
    assert rc == 0
    assert args[:6] == ["--worker_num=16", "--local_worker_num=8", "--master_addr=10.0.0.1", "--master_port=9000",
                        "--node_rank=1", "--log_dir=out/msrun_log/node_1"]


@pytest.mark.parametrize("local, env, message", [
    (0, {}, "must be a positive integer"),
    (8, dict(WORKER_NUM=4), "8 workers on this node but WORKER_NUM=4"),
    (8, dict(WORKER_NUM=12), "not a multiple of 8"),
    (8, dict(NODE_NUM=2, NODE_RANK=2, MASTER_ADDR="h0"), "NODE_RANK=2 is out of range for NODE_NUM=2"),
    (8, dict(NODE_NUM=2), "need MASTER_ADDR"),
    (8, dict(NODE_NUM=1, WORKER_NUM=16), "WORKER_NUM=16 is not NODE_NUM=1 x 8"),
    (6, dict(NODE_NUM=2, WORKER_NUM=14, MASTER_ADDR="h0"), "every node runs the same number"),
    (8, dict(NODE_RANK="x"), "NODE_RANK must be a non-negative integer"),
    (8, dict(MASTER_PORT=70000), "MASTER_PORT must be a port number"),
])
def test_wrong_layouts_are_refused(local, env, message):
    rc, args, err = layout(local, **env)
    assert rc == 2 and not args
    assert message in err


@pytest.mark.parametrize("script, args, env", [
    ("run_distribute_train.sh", ["config/quickstart.yaml", ".", "8"], dict(NODE_NUM=2)),
    ("run_distribute_train.sh", ["config/quickstart.yaml", ".", "8"], dict(LOCAL_WORKER_NUM=4)),
    ("run_eval.sh", ["config/quickstart.yaml", ".", "README.md"], dict(DEVICE_NUM=2, NODE_NUM=2, NODE_RANK=3)),
])
def test_launchers_refuse_before_starting(script, args, env, tmp_path):
    """The launchers stop with the layout error before installing or starting anything."""
    out = subprocess.run(["bash", str(REPO / "scripts" / script), *args], cwd=REPO, env=clean_env(**env),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and "[setup]" not in out.stdout + out.stderr
