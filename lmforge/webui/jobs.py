"""Training runs launched by the web UI: one `lmforge train` subprocess at a time.

The process runs in its own session (process group), so Stop reaches everything it started
(tokenisation workers, dataloaders): SIGTERM first, which lmforge's trainer answers by saving a
checkpoint at the end of the current step and exiting 0, then SIGKILL after a grace period.
Where there are no POSIX process groups (Windows) the process gets its own console process group:
CTRL_BREAK_EVENT (SIGBREAK, answered like SIGTERM) first, then TerminateProcess.
Its output is kept like a terminal would show it (a `\\r` progress bar rewrites its line), and the
loss curve is read from the run folder's metrics.jsonl, which the trainer appends every step.
No Gradio in here.
"""

from __future__ import annotations

import codecs
import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.runs import METRICS_FILE

STOP_GRACE_S = 20.0  # time to finish the step and save a checkpoint before SIGKILL
POSIX_GROUPS = hasattr(os, "killpg")


def _new_group_kwargs() -> dict[str, Any]:
    """Popen arguments that put the child in a process group of its own."""
    if POSIX_GROUPS:
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


class LogBuffer:
    """The last `max_lines` lines of a process's output; `\\r` starts its line over."""

    def __init__(self, max_lines: int = 500):
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.current = ""
        self.lock = threading.Lock()

    def feed(self, text: str) -> None:
        with self.lock:
            for i, part in enumerate(text.split("\n")):
                if i:
                    self.lines.append(self.current)
                    self.current = ""
                first, *rewrites = part.split("\r")
                self.current += first
                for seg in rewrites:  # a carriage return: the next text overwrites the line
                    if seg:
                        self.current = seg

    def text(self) -> str:
        with self.lock:
            return "\n".join([*self.lines, self.current] if self.current else self.lines)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of metrics.jsonl; a line still being written (no valid JSON yet) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class TrainJob:
    """One `lmforge train` subprocess, its output and its fate."""

    def __init__(self, argv: list[str], run_dir: str, cli: str, env: dict[str, str] | None = None):
        self.run_dir, self.cli = run_dir, cli
        self.log = LogBuffer()
        self.log.feed(f"$ {cli}\n")
        self.stop_requested = False
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **_new_group_kwargs(),  # its own process group: Stop reaches its children too
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self.log.feed(decoder.decode(chunk))
        self.log.feed(decoder.decode(b"", final=True))
        self.proc.wait()  # output closed: reap the process now rather than at the next poll

    def _signal_group(self, hard: bool) -> None:
        """Ask the process group to stop (hard=False) or end it now (hard=True)."""
        try:
            if POSIX_GROUPS:
                os.killpg(self.proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
            elif hard:
                self.proc.kill()
            else:
                self.proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group now, SIGKILL it if the run has not exited after `grace_s`."""
        if not self.running or self.stop_requested:
            return
        self.stop_requested = True
        self._signal_group(hard=False)

        def escalate() -> None:
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(hard=True)
                self.proc.wait()
            self._signal_group(hard=True)  # children that outlived the main process

        threading.Thread(target=escalate, daemon=True).start()

    def finished(self) -> bool:
        """True once the process has exited and all of its output has been read."""
        if self.running:
            return False
        self._reader.join(timeout=5)
        return True

    def status(self) -> str:
        code = self.proc.poll()
        if code is None:
            what = "stopping (SIGTERM sent)" if self.stop_requested else "running"
            return f"{what}: pid {self.pid}, run folder {self.run_dir}"
        if self.stop_requested:
            state = "stopped"
        else:
            state = "finished" if code == 0 else "failed"
        return f"{state} (return code {code}): pid {self.pid}, run folder {self.run_dir}"


class JobBoard:
    """The web UI's one training slot (shared by every browser tab)."""

    def __init__(self) -> None:
        self.job: TrainJob | None = None
        self.lock = threading.Lock()

    def start(self, argv: list[str], run_dir: str, cli: str) -> TrainJob:
        with self.lock:
            if self.job is not None and self.job.running:
                raise LmforgeError(f"a run is already going (pid {self.job.pid}); stop it first")
            self.job = TrainJob(argv, run_dir, cli)
            return self.job

    def stop(self) -> TrainJob | None:
        if self.job is not None:
            self.job.stop()
        return self.job

    def shutdown(self, wait_s: float = 10.0) -> None:
        """Stop a running job when the web UI exits, so no orphan keeps training."""
        job = self.job
        if job is None or not job.running:
            return
        job.stop(grace_s=wait_s)
        deadline = time.monotonic() + wait_s + 5
        while job.running and time.monotonic() < deadline:
            time.sleep(0.1)
