"""Several msrun "nodes" on one machine, for the multi-node tests: one msrun invocation per node
rank on loopback, with the options the launchers' ``msrun_layout`` computes.

msrun starts the scheduler on the node whose addresses include MASTER_ADDR. On one machine
every node has the master's address, so node 1's msrun would start a second scheduler on the
master's port (it fails to bind, and msrun then reports the job as failed although the workers
finished). ``python msrun_nodes.py ARGS`` is msrun for a node other than the master: the master
address is treated as remote, as it is on a second machine; nothing else changes.
"""
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_nodes(script, script_args, env, logs, cwd, nodes=2, timeout=1200):
    """Run ``msrun MSRUN_ARGS script script_args`` once per node (node ranks 0 .. nodes-1, one
    worker each, master on 127.0.0.1); returns each node's console output. Fails with the
    workers' logs when a node's msrun fails."""
    layout = dict(env, NODE_NUM=str(nodes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), LOGS=str(logs))
    command = (f'source {REPO}/scripts/launcher_common.sh && msrun_layout 1 8118 "$LOGS" && '
               'exec $MSRUN "${MSRUN_ARGS[@]}" "$@"')
    processes = [subprocess.Popen(["bash", "-c", command, "node", str(script), *map(str, script_args)], cwd=cwd,
                                  env=dict(layout, NODE_RANK=str(rank),
                                           MSRUN="msrun" if rank == 0 else f"{sys.executable} {__file__}"),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for rank in range(nodes)]
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    worker_logs = "\n".join(p.read_text()[-2000:] for p in sorted(Path(logs).rglob("worker_*.log")))
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-2000:] + worker_logs
    return outputs


if __name__ == "__main__":
    from mindspore.parallel.cluster.process_entity import _api
    from mindspore.parallel.cluster.run import main

    _api._is_local_ip = lambda address: False
    sys.exit(main())
