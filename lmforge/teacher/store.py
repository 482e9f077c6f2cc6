"""Exact, resumable output of generated rows: every input id once, in input order, across kills.

Answers arrive out of order (many requests in flight), and a run may be killed at any byte. Files
next to OUTPUT (none has a data-file extension, so a folder given to `--dataset` never picks
them up):

- ``OUTPUT``          the rows, one JSON line each with its ``id``, in input order.
- ``OUTPUT.partial``  the journal: every finished row appended as it arrives (flush + fsync), in
                      completion order. Deleted when the run ends.
- ``OUTPUT.failed``   JSON lines ``{"id", "error", "attempts"}`` of the rows that failed after all
                      retries (absent when none failed). A rerun retries exactly these.
- ``OUTPUT.stats``    JSON: the settings that shape the rows, the totals of the last run.
- ``OUTPUT.lock``     held (flock) while a run writes, so two runs never interleave.

Only lines ending in a newline count: a torn last line (a kill mid-write) is cut off. While the
output holds exactly the first rows of the input, rows are appended as soon as every earlier row
is done (so OUTPUT grows during the run); otherwise (a rerun that fills gaps left by failures)
the journal collects them and OUTPUT is rewritten in input order at the end (temporary file,
fsync, rename). Either way a killed run loses nothing that reached the journal, and the finished
OUTPUT is byte-for-byte what an uninterrupted run writes. A row whose question no longer matches
the input (the input file changed) is not reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from lmforge import faults
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

SIDECARS = ("partial", "failed", "stats", "lock")


def row_key(row_id: Any) -> str:
    return json.dumps(row_id, ensure_ascii=False)


def question_hash(messages: list[dict]) -> str:
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def dump_row(row: dict) -> bytes:
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


def _complete_lines(path: Path) -> tuple[list[tuple[int, bytes]], int]:
    """((offset, line) for every newline-terminated line, end offset of the last one)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    lines, pos = [], 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            break
        lines.append((pos, data[pos : end + 1]))
        pos = end + 1
    return lines, pos


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RowStore:
    """The output of one generate run. `keys` are the row ids (`row_key`) in input order;
    `questions` (key → `question_hash` of the row's question) lets stale rows be recognised."""

    def __init__(self, output_file: str, keys: list[str], questions: dict[str, str] | None = None):
        self.out = Path(output_file)
        self.keys = keys
        self.questions = questions
        self.paths = {name: Path(f"{output_file}.{name}") for name in SIDECARS}
        self.index: dict[str, tuple[Path, int, int]] = {}  # key → (file, offset, length)
        self.failed: dict[str, tuple[str, int]] = {}
        self.head = 0  # rows keys[:head] are settled: in OUTPUT, or failed in this run
        self.append_mode = False
        self.num_resumed = 0
        self.num_new = 0
        self._lock_fd: int | None = None
        self._journal = None
        self._output = None
        self._kill_after = faults.current().kill_after_rows  # test hook (lmforge/faults.py)

    # --- opening ------------------------------------------------------------------------------
    def open(self, resume: bool, settings: dict[str, Any]) -> None:
        if len(set(self.keys)) != len(self.keys):
            raise LmforgeError(f"{self.out}: row ids must be unique")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if not resume:
            for path in [self.out, *(p for n, p in self.paths.items() if n != "lock")]:
                path.unlink(missing_ok=True)
        self._check_settings(settings)
        self._write_stats({"settings": settings, "finished": False})
        out_keys = self._load(self.out)
        self._load(self.paths["partial"])
        wanted = set(self.keys)
        self.num_resumed = sum(1 for k in self.index if k in wanted)
        n = len(out_keys)
        self.append_mode = out_keys == self.keys[:n] and all(
            self.index.get(k, (None,))[0] == self.out for k in out_keys
        )
        self._journal = open(self.paths["partial"], "ab")
        if self.append_mode:
            self.head = n
            self._output = open(self.out, "ab")
            self._advance()

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fd = os.open(self.paths["lock"], os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise LmforgeError(
                f"{self.out}: another generate run is writing it (lock {self.paths['lock']})"
            ) from None
        self._lock_fd = fd

    def _check_settings(self, settings: dict[str, Any]) -> None:
        path = self.paths["stats"]
        has_rows = self.out.exists() or self.paths["partial"].exists()
        if not (has_rows and path.exists()):
            return
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("settings") or {}
        except (OSError, ValueError):
            return
        for key, value in settings.items():
            if key in old and old[key] != value:
                raise LmforgeError(
                    f"{self.out}: its rows were made with --{key} {old[key]!r}, now {value!r}; "
                    "give the same settings to resume, or --no_resume to start over"
                )

    def _load(self, path: Path) -> list[str]:
        """Index the complete rows of `path` (cutting off a torn last line); its keys in order."""
        lines, end = _complete_lines(path)
        if path.exists() and path.stat().st_size != end:
            with open(path, "r+b") as f:  # a kill mid-write: the fragment is no row
                f.truncate(end)
        keys, stale = [], 0
        for offset, line in lines:
            try:
                row = json.loads(line)
                key = row_key(row["id"])
                question = row["conversations"][:-1]
            except (ValueError, KeyError, TypeError, IndexError):
                raise LmforgeError(
                    f"{path}: line at byte {offset} is not a row written by lmforge generate "
                    "(no id / conversations); use another --output_file or --no_resume"
                ) from None
            keys.append(key)
            expected = (self.questions or {}).get(key)
            if expected is not None and question_hash(question) != expected:
                stale += 1
                continue
            self.index.setdefault(key, (path, offset, len(line)))
        if stale:
            log.warning(
                "%s: %d rows answer other questions than the input has now; asking again", path, stale
            )
        return keys

    # --- writing ------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.index

    def add(self, key: str, row: dict) -> None:
        """A finished row: journal it (durably), then extend OUTPUT if it is next in order."""
        data = dump_row(row)
        self.num_new += 1
        if self._kill_after and self.num_new == self._kill_after:  # test hook: die mid-line
            self._journal.write(data[: len(data) // 2])
            self._journal.flush()
            faults.kill_process()
        offset = self._journal.tell()
        self._journal.write(data)
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self.index[key] = (self.paths["partial"], offset, len(data))
        self._advance()

    def fail(self, key: str, error: str, attempts: int) -> None:
        self.failed[key] = (error, attempts)
        self._advance()

    def _read(self, key: str) -> bytes:
        path, offset, length = self.index[key]
        if path == self.paths["partial"]:
            self._journal.flush()
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _advance(self) -> None:
        if not self.append_mode:
            return
        wrote = False
        while self.head < len(self.keys):
            key = self.keys[self.head]
            if key in self.index:
                self._output.write(self._read(key))
                wrote = True
            elif key not in self.failed:
                break
            self.head += 1
        if wrote:
            self._output.flush()
            os.fsync(self._output.fileno())

    # --- closing ------------------------------------------------------------------------------
    def finish(self, stats: dict[str, Any]) -> None:
        """Every row is done or failed: make OUTPUT final, list failures, drop the journal."""
        complete = self.append_mode and self.head == len(self.keys)
        if self._output is not None:
            self._output.close()
        self._journal.flush()
        if not complete:
            self._rewrite()
        self._journal.close()
        self.paths["partial"].unlink(missing_ok=True)
        self._write_failed()
        old = json.loads(self.paths["stats"].read_text(encoding="utf-8"))
        self._write_stats({**old, **stats, "finished": True})
        self.release()

    def _rewrite(self) -> None:
        tmp = self.out.with_name(self.out.name + ".tmp")
        with open(tmp, "wb") as f:
            for key in self.keys:
                if key in self.index:
                    f.write(self._read(key))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.out)
        _fsync_dir(self.out)

    def _write_failed(self) -> None:
        path = self.paths["failed"]
        if not self.failed:
            path.unlink(missing_ok=True)
            return
        lines = [
            dump_row({"id": json.loads(key), "error": err, "attempts": n})
            for key in self.keys
            if key in self.failed
            for err, n in [self.failed[key]]
        ]
        self._atomic_write(path, b"".join(lines))

    def _write_stats(self, stats: dict[str, Any]) -> None:
        self._atomic_write(
            self.paths["stats"], (json.dumps(stats, indent=2, ensure_ascii=False) + "\n").encode()
        )

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def release(self) -> None:
        for f in (self._journal, self._output):
            if f is not None and not f.closed:
                f.close()
        if self._lock_fd is not None:
            self.paths["lock"].unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def num_rows(self) -> int:
        return sum(1 for k in self.keys if k in self.index)
