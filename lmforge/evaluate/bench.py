"""Multiple-choice benchmark folders in the three layouts people download, read row by row.

    C-Eval  val/SUBJECT_val.csv, dev/SUBJECT_dev.csv   header id,question,A,B,C,D,answer[,explanation]
    CMMLU   test/SUBJECT.csv,    dev/SUBJECT.csv       header ,Question,A,B,C,D,Answer
    MMLU    test/SUBJECT_test.csv, dev/SUBJECT_dev.csv, val/SUBJECT_val.csv   no header: question,A,B,C,D,answer

An optional `subject_mapping.json` ({subject: [English name, Chinese name, category]}, as C-Eval
ships) names subjects in prompts and groups them by category. A bad row stops with
`file:line: "field" ...`. `--task_dir ceval|cmmlu|mmlu` (when no such folder exists) means the
small sample folders bundled in `lmforge/assets/bench_samples/`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import DataError, LmforgeError

LETTERS = ("A", "B", "C", "D")
LAYOUTS = ("ceval", "cmmlu", "mmlu")
DEFAULT_SPLIT = {"ceval": "val", "cmmlu": "test", "mmlu": "test"}
DEFAULT_LANG = {"ceval": "zh", "cmmlu": "zh", "mmlu": "en"}


@dataclass
class Question:
    subject: str
    question: str
    choices: list[str]
    answer: str  # one of LETTERS
    where: str = ""  # file:line, for reports


@dataclass
class Subject:
    name: str
    title: dict[str, str]  # {"en": ..., "zh": ...}
    category: str
    questions: list[Question]
    dev: list[Question] = field(default_factory=list)


def samples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "bench_samples"


def resolve_task_dir(task_dir: str | None) -> Path:
    if not task_dir:
        raise LmforgeError(
            "--task mc needs --task_dir: a C-Eval / CMMLU / MMLU folder (or ceval, cmmlu, mmlu for the bundled samples)"
        )
    path = Path(task_dir)
    if not path.is_dir() and task_dir in LAYOUTS:
        return samples_dir() / task_dir
    if not path.is_dir():
        raise LmforgeError(f"--task_dir {task_dir}: folder not found")
    return path


def detect_layout(task_dir: Path) -> str:
    if any((task_dir / "val").glob("*_val.csv")) and not any((task_dir / "test").glob("*_test.csv")):
        return "ceval"
    if any((task_dir / "test").glob("*_test.csv")):
        return "mmlu"
    if any((task_dir / "test").glob("*.csv")):
        return "cmmlu"
    raise LmforgeError(
        f"--task_dir {task_dir}: no val/*_val.csv (C-Eval), test/*.csv (CMMLU) or test/*_test.csv (MMLU) inside"
    )


def _file(task_dir: Path, layout: str, split: str, subject: str) -> Path:
    name = f"{subject}.csv" if layout == "cmmlu" else f"{subject}_{split}.csv"
    return task_dir / split / name


def _subjects_in(task_dir: Path, layout: str, split: str) -> list[str]:
    files = sorted((task_dir / split).glob("*.csv"))
    if layout == "cmmlu":
        return [f.stem for f in files]
    return [f.stem[: -len(split) - 1] for f in files if f.stem.endswith(f"_{split}")]


def read_questions(path: Path, layout: str, subject: str) -> list[Question]:
    """Every row of one CSV file; answers must be A-D."""
    from lmforge.data.textio import no_rows_error, open_text

    out: list[Question] = []
    with open_text(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        if layout != "mmlu":
            header = [h.strip().lower() for h in next(reader, [])]
            want = ["question", "a", "b", "c", "d", "answer"]
            if header[1 : 1 + len(want)] != want:
                raise DataError(
                    str(path),
                    1,
                    "header",
                    f"must be {'id' if layout == 'ceval' else ''},{','.join(want)}",
                    ",".join(header),
                )
        for row in reader:
            line = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            cells = row if layout == "mmlu" else row[1:]
            if len(cells) < 6:
                raise DataError(
                    str(path), line, "row", "needs question, A, B, C, D, answer", f"{len(cells)} columns"
                )
            answer = cells[5].strip().upper()
            if answer not in LETTERS:
                raise DataError(str(path), line, "answer", "must be one of A, B, C, D", repr(cells[5]))
            out.append(Question(subject, cells[0], [c.strip() for c in cells[1:5]], answer, f"{path}:{line}"))
    if not out:
        raise no_rows_error(str(path))
    return out


def _mapping(task_dir: Path) -> dict[str, list[str]]:
    path = task_dir / "subject_mapping.json"
    if not path.is_file():
        return {}
    from lmforge.data.textio import read_json_file

    data = read_json_file(path)
    if not isinstance(data, dict):
        raise LmforgeError(f"{path}: must be a JSON object {{subject: [en, zh, category]}}")
    return data


def load_benchmark(
    task_dir: Path,
    layout: str | None = None,
    split: str | None = None,
    subjects: list[str] | None = None,
    limit: int | None = None,
) -> tuple[str, str, list[Subject]]:
    """(layout, split, subjects with their questions and dev examples)."""
    layout = layout or detect_layout(task_dir)
    split = split or DEFAULT_SPLIT[layout]
    names = _subjects_in(task_dir, layout, split)
    if not names:
        raise LmforgeError(f"--task_dir {task_dir}: no {layout} {split} files in {task_dir / split}")
    if subjects:
        unknown = [s for s in subjects if s not in names]
        if unknown:
            raise LmforgeError(
                f"--subjects {unknown[0]!r} is not in {task_dir / split} (have: {', '.join(names)})"
            )
        names = [n for n in names if n in subjects]
    mapping = _mapping(task_dir)
    out = []
    for name in names:
        questions = read_questions(_file(task_dir, layout, split, name), layout, name)[: limit or None]
        dev_path = _file(task_dir, layout, "dev", name)
        dev = read_questions(dev_path, layout, name) if dev_path.is_file() else []
        en, zh, category = (mapping.get(name) or [None, None, "other"])[:3]
        plain = name.replace("_", " ")
        out.append(Subject(name, {"en": en or plain, "zh": zh or plain}, category or "other", questions, dev))
    return layout, split, out


# LLaMA-Factory's `--task NAME_SPLIT` (its `--task_dir`, default `evaluation`, holds one folder per
# benchmark: evaluation/mmlu/, evaluation/ceval/, evaluation/cmmlu/) → lmforge's layout and split.
LLAMAFACTORY_TASKS = {
    "mmlu_test": ("mmlu", "test"),
    "ceval_validation": ("ceval", "val"),
    "cmmlu_test": ("cmmlu", "test"),
}


def llamafactory_task_dir(task: str, task_dir: str | None) -> tuple[Path, str, str]:
    """(folder in `layout`, layout, split) for a LLaMA-Factory task name; the CSV folders may sit in
    TASK_DIR/NAME/ or, as its archives unpack, TASK_DIR/NAME/data/ (or TASK_DIR itself)."""
    layout, split = LLAMAFACTORY_TASKS[task]
    root = Path(task_dir or "evaluation")
    for folder in (root / layout, root / layout / "data", root):
        if any((folder / split).glob("*.csv")):
            return folder, layout, split
    archive = root / layout / f"{layout}.zip"
    hint = f"unzip {archive} there" if archive.is_file() else f"put the {layout} CSV files there"
    raise LmforgeError(
        f"--task {task}: no {split}/*.csv under {root / layout} (--task_dir {root}); {hint} "
        f"({split}/ and dev/ folders, {layout} layout); lmforge downloads nothing"
    )
