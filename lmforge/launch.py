"""Multi-process launch: `NPROC_PER_NODE=2 lmforge train ...` re-runs itself under torchrun.

The environment variables are ms-swift's (and torchrun's own flag names): `NPROC_PER_NODE`,
`NNODES`, `NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT`. When one of the first two is set and this
process is not already a torchrun worker (no `LOCAL_RANK`), the command is re-executed as
`python -m lmforge.launch --nproc_per_node N ... -m lmforge train ...`; this module's `__main__`
is torchrun's own entry point with one change: a failed worker ends in one line (the worker has
already printed its own error) instead of torchrun's ChildFailedError traceback.

Each worker then runs the ordinary pipeline; transformers' Trainer (through accelerate) sets up
DDP (NCCL on GPUs, gloo on CPU), shards the data by rank, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from lmforge.errors import LmforgeError

LAUNCH_VARS = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
# Shared by every rank so that all of them pick the same default run folder (runs.default_output_dir).
RUN_STAMP_VAR = "LMFORGE_RUN_STAMP"


def wants_launch(env: dict[str, str] | None = None) -> bool:
    """True when the launch variables ask for torchrun and this process is not a worker already."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:
        return False
    return bool(env.get("NPROC_PER_NODE") or env.get("NNODES"))


def _int_var(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LmforgeError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise LmforgeError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The command line that runs `lmforge ARGV` on every process the launch variables ask for."""
    env = os.environ if env is None else env
    nproc = _int_var(env, "NPROC_PER_NODE", 1, 1)
    nnodes = _int_var(env, "NNODES", 1, 1)
    node_rank = _int_var(env, "NODE_RANK", 0, 0)
    if node_rank >= nnodes:
        raise LmforgeError(f"NODE_RANK={node_rank} must be below NNODES={nnodes}")
    if nnodes > 1 and not env.get("MASTER_ADDR"):
        raise LmforgeError(f"NNODES={nnodes}: set MASTER_ADDR (the address of the NODE_RANK=0 machine)")
    # one machine and no port given: any free port, so that two runs side by side do not collide
    port = _int_var(env, "MASTER_PORT", 29500 if nnodes > 1 else 0, 0) or _free_port()
    return [
        sys.executable,
        "-m",
        "lmforge.launch",
        "--nproc_per_node",
        str(nproc),
        "--nnodes",
        str(nnodes),
        "--node_rank",
        str(node_rank),
        "--master_addr",
        env.get("MASTER_ADDR") or "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "lmforge",
        *argv,
    ]


def relaunch(argv: list[str]) -> int:
    """Run `lmforge ARGV` under torchrun with the launch variables; returns its exit status."""
    cmd = torchrun_command(argv)
    env = dict(os.environ)
    env.setdefault(RUN_STAMP_VAR, time.strftime("%Y%m%d-%H%M%S"))
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, set here to skip its warning
    return subprocess.call(cmd, env=env)


def _torchrun_main(args: list[str]) -> int:
    # torchrun's agent logs each worker failure at WARNING/ERROR level; the worker's own one-line
    # message and the line below say it already (LOGLEVEL=INFO brings the agent's log back)
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    level = os.environ.get("LOGLEVEL", "CRITICAL")
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(level)

    try:
        main(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        why = f"was killed by signal {-code}" if code < 0 else f"stopped with exit status {code}"
        print(f"lmforge: error: rank {rank} {why} (its own message, if any, is above)", file=sys.stderr)
        return code if code > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(_torchrun_main(sys.argv[1:]))
