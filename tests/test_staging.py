"""Leftovers of a save killed mid-write (`.staging-PID/checkpoint-N/`, `.trash-checkpoint-N-PID/`)
are removed at the next save or resume, and only when process PID is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lmforge.pipeline import run_train
from lmforge.runs import list_checkpoints, pid_alive, remove_stale_staging


def _dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def _half_written(run_dir: Path, folder: str, step: int = 3) -> Path:
    ckpt = run_dir / folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"partial")
    (ckpt / "trainer_state.json").write_text("{}")  # even a complete-looking one is a leftover
    return run_dir / folder


def test_only_folders_of_dead_processes_are_removed(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        dead = _dead_pid()
        gone = [
            _half_written(tmp_path, f".staging-{dead}"),
            _half_written(tmp_path, f".trash-checkpoint-4-{dead}", 4),
        ]
        kept = [
            _half_written(tmp_path, f".staging-{live.pid}"),
            _half_written(tmp_path, ".staging-1"),  # pid 1 (init) is always alive
            _half_written(tmp_path, f"staging-{dead}"),  # not lmforge's name: never touched
            _half_written(tmp_path, f".staging-{dead}-x"),
        ]
        (tmp_path / f".staging-{dead + 1}0").write_text("a file, not a folder")
        assert sorted(remove_stale_staging(tmp_path)) == sorted(gone)
        assert not any(p.exists() for p in gone)
        assert all(p.is_dir() for p in kept) and (tmp_path / f".staging-{dead + 1}0").is_file()
        assert remove_stale_staging(tmp_path) == []  # nothing left to do
        assert remove_stale_staging(tmp_path / "missing") == []
    finally:
        live.kill()
        live.wait()


def test_pid_alive():
    import os

    assert pid_alive(os.getpid()) and pid_alive(1)
    assert not pid_alive(_dead_pid()) and not pid_alive(0) and not pid_alive(-5)


def test_the_next_resume_and_the_next_save_clear_dead_staging(synth_dir, tmp_path, monkeypatch):
    """A run folder with a dead save's staging folder and a live one's. (1) A resume killed before
    it saves anything has already removed the dead one; (2) a folder left by a process that dies
    while the run goes on is removed at the run's next save. The live one stays throughout."""
    import os

    from lmforge.training import trainer as trainer_mod

    out = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    args = [
        "--preset", "tiny", "--dataset", str(synth_dir / "pretrain.jsonl"), "--output_dir", str(out),
        "--max_length", "32", "--per_device_train_batch_size", "2", "--max_samples", "40",
        "--save_steps", "2", "--save_total_limit", "10", "--logging_steps", "1", "--report_to", "none",
        "--dataloader_num_workers", "0", "--plot", "false", "--max_steps", "4",
    ]  # fmt: skip
    try:
        run_train("pretrain", [*args, "--max_steps", "2"])
        assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
        dead = _half_written(out, f".staging-{_dead_pid()}", 4)
        alive = _half_written(out, f".staging-{live.pid}", 4)
        env = {**os.environ, "LMFORGE_FAULT_KILL_AT_STEP": "3", "OMP_NUM_THREADS": "1"}
        cmd = [
            sys.executable,
            "-m",
            "lmforge",
            "train",
            "pretrain",
            *args,
            "--resume_from_checkpoint",
            "latest",
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == -9, res.stderr[-2000:]  # killed as step 3 began: nothing saved since
        assert not dead.exists() and alive.is_dir()
        assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]

        later = out / f".staging-{_dead_pid()}"
        on_step_end = trainer_mod.MetricsCallback.on_step_end

        def leave_one_at_step_3(self, args, state, control, **kw):  # a save elsewhere died mid-run
            if state.global_step == 3:
                _half_written(out, later.name, 3)
            return on_step_end(self, args, state, control, **kw)

        monkeypatch.setattr(trainer_mod.MetricsCallback, "on_step_end", leave_one_at_step_3)
        run_train("pretrain", [*args, "--resume_from_checkpoint", "latest"])
        assert not later.exists() and alive.is_dir()
        assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
        assert list(out.glob(".staging-*")) == [alive]
    finally:
        live.kill()
        live.wait()
