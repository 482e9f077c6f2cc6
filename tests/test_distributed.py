"""Multi-process launch (lmforge/launch.py): `NPROC_PER_NODE=2 lmforge train ...` runs 2-process DDP
on CPU (gloo) through torchrun; the ranks see disjoint data and the run equals a single-process run
with the same global batch; only rank 0 writes the run folder; failures end in one line."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.launch import torchrun_command, wants_launch
from lmforge.pipeline import run_train

WORDS = "alpha beta gamma delta river stone cloud light paper window garden silver".split()


def _docs(path: Path) -> Path:
    """48 distinct documents (each names its own number), so every packed row is unique."""
    import random

    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(48):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
            fh.write(json.dumps({"text": f"document {i}: {words}"}) + "\n")
    return path


def _args(data: Path, out: Path, per_device: int) -> list[str]:
    return [
        "pretrain",
        "--dataset",
        str(data),
        "--output_dir",
        str(out),
        "--preset",
        "tiny",
        "--max_length",
        "32",
        "--per_device_train_batch_size",
        str(per_device),
        "--gradient_accumulation_steps",
        "1",
        "--learning_rate",
        "3e-3",
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
        "--plot",
        "false",
        "--device",
        "cpu",
    ]


def _launch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env.update(extra)
    return env


def _dump(dump_dir: Path, rank: int) -> dict[int, list[str]]:
    lines = Path(dump_dir, f"rank{rank}.jsonl").read_text().splitlines()
    return {json.loads(ln)["step"]: json.loads(ln)["rows"] for ln in lines}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def test_two_process_ddp_equals_single_process(tmp_path, monkeypatch):
    data = _docs(tmp_path / "docs.jsonl")
    two, one = tmp_path / "two", tmp_path / "one"
    # 2 ranks x 2 rows through torchrun, started by the launch variables alone; no GPU visible and no
    # --device cpu: the ranks still join one gloo group (one run, one metrics line per step)
    launched = _args(data, two, 2)[:-2]
    assert _args(data, two, 2)[-2:] == ["--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", *launched],
        env=_launch_env(
            NPROC_PER_NODE="2", LMFORGE_DEBUG_BATCH_DIR=str(tmp_path / "dump2"), CUDA_VISIBLE_DEVICES=""
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 1 process x 4 rows: the same global batch
    monkeypatch.setenv("LMFORGE_DEBUG_BATCH_DIR", str(tmp_path / "dump1"))
    run_train("pretrain", _args(data, one, 4)[1:])

    # the two ranks saw disjoint rows, and together exactly the single process's batch of each step
    rank0, rank1 = _dump(tmp_path / "dump2", 0), _dump(tmp_path / "dump2", 1)
    single = _dump(tmp_path / "dump1", 0)
    assert sorted(rank0) == sorted(rank1) == sorted(single) == [1, 2, 3, 4]
    for step in single:
        assert len(rank0[step]) == len(rank1[step]) == 2
        assert not set(rank0[step]) & set(rank1[step])
        assert sorted(rank0[step] + rank1[step]) == sorted(single[step])

    # same per-step global loss and token count, and the same final weights, within fp32 tolerance
    m1, m2 = _metrics(one), _metrics(two)
    assert [r["step"] for r in m2] == [1, 2, 3, 4]  # one line per step: only rank 0 writes
    for a, b in zip(m1, m2):
        assert a["tokens"] == b["tokens"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert w1.keys() == w2.keys()
    moved = max((w1[k] - load_file(one / "checkpoint-2" / "model.safetensors")[k]).abs().max() for k in w1)
    assert moved > 1e-3  # training changed the weights, so the comparison below means something
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)

    # rank 0 wrote complete checkpoints (every rank's rng state inside) and left no staging folders
    ckpt = two / "checkpoint-4"
    assert {p.name for p in ckpt.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (ckpt / "trainer_state.json").is_file() and (two / "lmforge_finished.json").is_file()
    assert not [p.name for p in two.iterdir() if p.name.startswith(".")]


# A log record or a warning from some library: "[name] ...", "WARNING ...", "file.py:12: UserWarning: ..."


def test_failed_worker_ends_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", "pretrain", "--dataset", str(tmp_path / "missing.jsonl")],
        env=_launch_env(NPROC_PER_NODE="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("lmforge: error: rank ") and "exit status 2" in lines[-1]
    errors = [ln for ln in lines if ln.startswith("lmforge: error: ")]
    assert len(errors) >= 2 and any("missing.jsonl" in ln for ln in errors), proc.stderr
    # Whatever else is on stderr may be other libraries' log lines, in whatever shape they print
    # (`kernels` writes "Skipping publisher trust check ..." plainly), but never torchrun's failure
    # dump or a traceback.
    dump = ("Root Cause", "error_file", "exitcode", "Failures:", "traceback :", "=" * 20)
    assert not [ln for ln in lines if any(mark in ln for mark in dump)], proc.stderr


def test_launch_variables():
    assert wants_launch({"NPROC_PER_NODE": "2"}) and wants_launch({"NNODES": "2", "MASTER_ADDR": "h"})
    assert not wants_launch({})
    assert not wants_launch({"NPROC_PER_NODE": "2", "LOCAL_RANK": "0"})  # a torchrun worker already
    cmd = torchrun_command(
        ["train", "sft"],
        {"NPROC_PER_NODE": "4", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"},
    )
    assert cmd[1:3] == ["-m", "lmforge.launch"] and cmd[-4:] == ["-m", "lmforge", "train", "sft"]
    flags = dict(zip(cmd[3:-4:2], cmd[4:-4:2]))
    assert flags == {
        "--nproc_per_node": "4",
        "--nnodes": "2",
        "--node_rank": "1",
        "--master_addr": "10.0.0.1",
        "--master_port": "29500",
    }
    local = torchrun_command(["train", "pretrain"], {"NPROC_PER_NODE": "2"})
    assert local[local.index("--master_addr") + 1] == "127.0.0.1"
    assert int(local[local.index("--master_port") + 1]) > 0  # a free port, not a fixed one


@pytest.mark.parametrize(
    "env,message",
    [
        ({"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE='two': expected a whole number"),
        ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE='0': must be at least 1"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h"}, "NODE_RANK=2 must be below NNODES=2"),
        ({"NNODES": "2"}, "set MASTER_ADDR"),
    ],
)
def test_bad_launch_variables(env, message):
    with pytest.raises(LmforgeError, match=message):
        torchrun_command(["train", "pretrain"], env)


def test_bad_launch_variable_is_one_line_from_the_cli(monkeypatch, capsys):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("NPROC_PER_NODE", "many")
    assert main(["train", "pretrain", "--dataset", "x.jsonl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lmforge: error: NPROC_PER_NODE='many': expected a whole number"


# --- --deepspeed / --fsdp ----------------------------------------------------------------------
def _training_args(tmp_path, *flags):
    from lmforge.pipeline import resolve_train_config
    from lmforge.training.build import build_training_args
    from lmforge.tuners.optim import training_overrides

    _, cfg = resolve_train_config("pretrain", ["--dataset", "x.jsonl", "--device", "cpu", *flags])
    # as training/checks.py: the optimiser fields (Muon, from-scratch pretraining's default) first
    return build_training_args(cfg, str(tmp_path / "run"), overrides=training_overrides(cfg))


@pytest.mark.parametrize("name", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_shipped_deepspeed_configs(name):
    from lmforge.training.sharding import deepspeed_config_path

    path = Path(deepspeed_config_path(name))
    assert path.parent.parts[-3:] == ("lmforge", "assets", "deepspeed")  # package data
    zero = json.loads(path.read_text())["zero_optimization"]
    assert zero["stage"] == int(name[4])
    assert ("offload_optimizer" in zero) == name.endswith("_offload")
    assert ("offload_param" in zero) == (name == "zero3_offload")


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is not None,
    reason="deepspeed is installed here, so the missing-package message cannot appear",
)
@pytest.mark.parametrize("value", ["zero3_offload", "OWN_JSON"])
def test_deepspeed_missing_names_pip_install(tmp_path, value):
    if value == "OWN_JSON":
        value = str(tmp_path / "ds.json")
        Path(value).write_text('{"zero_optimization": {"stage": 2}}')
    with pytest.raises(LmforgeError, match=r"needs DeepSpeed: pip install \"lmforge\[deepspeed\]\"") as e:
        _training_args(tmp_path, "--deepspeed", value)
    assert "\n" not in str(e.value)


def test_deepspeed_bad_values(tmp_path):
    with pytest.raises(LmforgeError, match="did you mean zero2"):
        _training_args(tmp_path, "--deepspeed", "zer02")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LmforgeError, match="not a readable JSON file"):
        _training_args(tmp_path, "--deepspeed", str(bad))
    with pytest.raises(LmforgeError, match="choose one"):
        _training_args(tmp_path, "--deepspeed", "zero2", "--fsdp", "true")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message; this machine has a GPU")
@pytest.mark.parametrize("value", ["true", "full_shard auto_wrap"])
def test_fsdp_on_cpu_is_a_clear_message(tmp_path, value):
    with pytest.raises(LmforgeError, match="--fsdp needs GPUs .* runs plain DDP"):
        _training_args(tmp_path, "--fsdp", value)
    assert not _training_args(tmp_path, "--fsdp", "false").fsdp  # off: plain training
