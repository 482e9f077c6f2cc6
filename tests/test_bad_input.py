"""Bad input, every command: a table of malformed inputs (data files, model folders, adapters) × the
commands that read them (`train sft`, `data check`, `infer`, `eval`, `merge`). Each must exit 2 with
exactly one `lmforge: error:` line naming the file and its line or field, no traceback, and leave no
output behind. Commands run in-process through `lmforge.cli.main` (one tiny model for all); log lines
other libraries print on stderr are ignored, only `lmforge: error:` lines are counted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmforge.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
CHAT_LINE = json.dumps(CHAT)
LATIN1 = "caf\xe9".encode("latin-1")  # 0xe9 alone is not UTF-8
HUGE = 4000  # MAX_LINE_CHARS is patched to 1000 for the table (the real limit is 64 Mi characters)


@dataclass
class Models:
    base: Path
    adapter: Path


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer) -> Models:
    """One tiny model and a LoRA adapter on it (copied, then broken, by the cases that need it)."""
    from peft import LoraConfig, get_peft_model

    from lmforge.models.scratch import init_model

    root = tmp_path_factory.mktemp("models")
    base, adapter = root / "base", root / "adapter"
    model = init_model(tokenizer, preset="tiny", seed=0)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    return Models(base, adapter)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# --- the malformed inputs: each writes its input under `d` and returns (path, what the error names) ----
def _file(name: str, data: bytes | str, where: str) -> Callable:
    def make(d: Path, models: Models) -> tuple[Path, str]:
        path = d / name
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path, where.format(path=path)

    return make


def _empty_folder(d: Path, models: Models) -> tuple[Path, str]:
    (d / "data").mkdir()
    (d / "data" / "notes.md").write_text("not data")
    return d / "data", "{path}".format(path=d / "data")


def _broken_model(how: str, file: str = "model.safetensors") -> Callable:
    def make(d: Path, models: Models) -> tuple[Path, str]:
        src = models.adapter if file.startswith("adapter") else models.base
        folder = _copy(src, d / src.name)
        target = folder / file
        data = target.read_bytes()
        broken = {
            "corrupt": os.urandom(64) + data[64:],
            "truncated": data[: len(data) // 2],
            "zero": b"",
            "badjson": b'{"model_type": ',
            "latin1": b'{"model_type": "' + LATIN1 + b'"}',
        }[how]
        target.write_bytes(broken)
        return folder, str(target)

    return make


def _missing_shard(d: Path, models: Models) -> tuple[Path, str]:
    folder = _copy(models.base, d / "base")
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder, "model-00002-of-00002.safetensors"


def _chat_bytes(content: bytes) -> bytes:
    """A valid chat row whose answer is `content` as raw bytes (so only the encoding is wrong)."""
    head, tail = CHAT_LINE.encode().split(b"hello")
    return head + content + tail


# name → (maker, regex the error must match besides the file, commands it applies to). Row-level cases
# hold no good row: `data check` reports a file with some bad rows and exits 1 (documented); with no
# usable row it refuses (exit 2) like the other commands.
DATA = ("train", "check", "infer", "eval_gen")
CSV = ("train", "check", "infer")
MODEL = (
    "train_model",
    "infer_model",
    "eval_model",
    "merge_base",
    "chat_model",
    "serve_model",
    "export_model",
)
NOT_UTF8 = r"not UTF-8 text \(byte 0xe9 at offset \d+\)"
EMPTY = r"empty file \(0 bytes\)|only blank lines|no data rows"
BROKEN = r"corrupt or truncated weights file"
INPUTS: dict[str, tuple[Callable, str, tuple[str, ...]]] = {
    "invalid_json_jsonl": (_file("d.jsonl", '\n{"conversations": [\n', "{path}:2"), "JSON", DATA),
    "invalid_json_array": (_file("d.json", "[\n{oops}\n]", "{path}:2"), "JSON", DATA),
    "wrong_type_conversations": (
        _file("d.jsonl", '{"conversations": "hello"}\n', "{path}:1"),
        '"conversations".* list',
        DATA,
    ),
    "wrong_type_row": (_file("d.jsonl", "\n[1, 2]\n", "{path}:2"), "JSON object", DATA),
    "wrong_type_json_element": (_file("d.json", "[\n7\n]", "{path}:2"), "JSON object", DATA),
    "wrong_type_content": (
        _file("d.jsonl", '{"conversations": [{"role": "user", "content": 3}]}\n', "{path}:1"),
        r"conversations\[0\]",
        DATA,
    ),
    "missing_content": (
        _file("d.jsonl", '{"conversations": [{"role": "user"}]}\n', "{path}:1"),
        r"conversations\[0\]",
        DATA,
    ),
    "missing_columns_jsonl": (_file("d.jsonl", '{"foo": 1}\n', "{path}:1"), "foo", DATA),
    "missing_columns_csv": (_file("d.csv", "question,answer\nhi,hello\n", "{path}:2"), "question", CSV),
    "non_utf8_jsonl": (
        _file("d.jsonl", CHAT_LINE.encode() + b"\n" + _chat_bytes(LATIN1) + b"\n", "{path}:2"),
        NOT_UTF8,
        DATA,
    ),
    "non_utf8_csv": (
        _file("d.csv", b"user_prompt,prediction\nhi,hello\n" + LATIN1 + b",x\n", "{path}:3"),
        NOT_UTF8,
        CSV,
    ),
    "non_utf8_csv_header": (_file("d.csv", LATIN1 + b",prediction\nhi,x\n", "{path}:1"), NOT_UTF8, CSV),
    "non_utf8_json": (_file("d.json", b"[\n" + _chat_bytes(LATIN1) + b"\n]", "{path}:2"), NOT_UTF8, DATA),
    "non_utf8_text": (
        _file("d.txt", b"hello\n" + LATIN1 + b"\n", "{path}:2"),
        NOT_UTF8,
        ("eval_ppl", "check_pretrain", "tokenizer"),
    ),
    "empty_0_bytes": (_file("d.jsonl", b"", "{path}"), EMPTY, (*DATA, "eval_ppl")),
    "blank_lines_only": (_file("d.jsonl", "\n  \n\n", "{path}"), EMPTY, (*DATA, "eval_ppl")),
    "csv_header_only": (_file("d.csv", "user_prompt,prediction\n", "{path}"), EMPTY, CSV),
    "empty_json_list": (_file("d.json", "[]", "{path}"), EMPTY, DATA),
    "empty_folder": (_empty_folder, "no data files|a folder", DATA),
    "huge_line": (
        _file("d.jsonl", CHAT_LINE + "\n" + CHAT_LINE.replace("hello", "x" * HUGE) + "\n", "{path}:2"),
        "at most 1000 characters",
        DATA,
    ),
    "huge_json_element": (
        _file("d.json", "[\n" + CHAT_LINE.replace("hello", "x" * HUGE) + "\n]", "{path}:2"),
        "at most 1000 characters",
        DATA,
    ),
    "missing_image": (  # a vision row (docs/vision.md): the image file must exist
        _file("d.jsonl", json.dumps({**CHAT, "images": ["gone.png"]}) + "\n", "{path}:1"),
        r'"images\[0\]" file \S*gone\.png not found',
        ("train", "check"),
    ),
    "image_placeholder_mismatch": (
        _file("d.jsonl", json.dumps({**CHAT, "images": []}).replace("hi", "<image>hi") + "\n", "{path}:1"),
        r'"images" lists 0 file\(s\) but the messages hold 1 <image>',
        ("train", "check"),
    ),
    "corrupt_safetensors": (_broken_model("corrupt"), BROKEN, MODEL),
    "truncated_safetensors": (_broken_model("truncated"), BROKEN, MODEL),
    "zero_byte_safetensors": (_broken_model("zero"), BROKEN, ("infer_model", "merge_base")),
    "config_invalid_json": (_broken_model("badjson", "config.json"), "not valid JSON", MODEL),
    "config_non_utf8": (_broken_model("latin1", "config.json"), NOT_UTF8, ("infer_model", "merge_base")),
    "missing_shard": (_missing_shard, "is missing", ("infer_model", "eval_model")),
    "corrupt_adapter_safetensors": (
        _broken_model("corrupt", "adapter_model.safetensors"),
        BROKEN,
        ("merge", "infer_adapter"),
    ),
    "truncated_adapter_safetensors": (
        _broken_model("truncated", "adapter_model.safetensors"),
        BROKEN,
        ("merge",),
    ),
    "adapter_config_invalid_json": (
        _broken_model("badjson", "adapter_config.json"),
        "not valid JSON",
        ("merge", "infer_adapter"),
    ),
    "adapter_config_non_utf8": (_broken_model("latin1", "adapter_config.json"), NOT_UTF8, ("merge",)),
    "bench_non_utf8_csv": (
        _file("b.csv", b"id,question,A,B,C,D,answer\n1," + LATIN1 + b",a,b,c,d,A\n", "{path}:2"),
        NOT_UTF8,
        ("eval_mc",),
    ),
    "bench_missing_columns": (
        _file("b.csv", "id,question,A,B,C,D,answer\n1,q,a,b\n", "{path}:2"),
        "needs question, A, B, C, D, answer",
        ("eval_mc",),
    ),
}


def _command(cmd: str, inp: Path, d: Path, models: Models) -> tuple[list[str], list[Path]]:
    """argv for `cmd` reading `inp`, and the outputs that must not exist afterwards."""
    out = d / "out"
    base = str(models.base)
    if cmd in ("train", "train_model"):
        data, model = (str(inp), base) if cmd == "train" else (str(d / "ok.jsonl"), str(inp))
        if cmd == "train_model":
            (d / "ok.jsonl").write_text(CHAT_LINE + "\n")
        argv = ["train", "sft", "--dataset", data, "--model_name_or_path", model, "--max_steps", "1"]
        return [*argv, "--max_length", "32", "--output_dir", str(out)], [out]
    if cmd in ("check", "check_pretrain"):
        plot, stage = d / "hist.png", "pretrain" if cmd == "check_pretrain" else "sft"
        return ["data", "check", "--dataset", str(inp), "--stage", stage, "--plot_path", str(plot)], [plot]
    if cmd in ("infer", "infer_model", "infer_adapter"):
        pred = d / "pred.jsonl"
        if cmd == "infer":
            return ["infer", "--model", base, "--input", str(inp), "--output", str(pred)], [pred]
        (d / "ok.jsonl").write_text(CHAT_LINE + "\n")
        model = (
            ["--model", str(inp)] if cmd == "infer_model" else ["--model", base, "--lora_weight", str(inp)]
        )
        return ["infer", *model, "--input", str(d / "ok.jsonl"), "--output", str(pred)], [pred]
    if cmd.startswith("eval"):
        flags = ["--output_dir", str(out), "--max_new_tokens", "2"]
        if cmd == "eval_model":
            (d / "ok.jsonl").write_text(CHAT_LINE + "\n")
            return ["eval", str(inp), "--task", "gen", "--dataset", str(d / "ok.jsonl"), *flags], [out]
        if cmd == "eval_mc":
            task = d / "bench"
            (task / "val").mkdir(parents=True)
            inp.rename(task / "val" / "math_val.csv")
            return ["eval", base, "--task", "mc", "--task_dir", str(task), *flags], [out]
        task = "ppl" if cmd == "eval_ppl" else "gen"
        return ["eval", base, "--task", task, "--dataset", str(inp), *flags], [out]
    if cmd == "merge":
        return ["merge", str(inp), "--output_dir", str(out)], [out]
    if cmd == "tokenizer":
        return ["tokenizer", "train", "--dataset", str(inp), "--output_dir", str(out)], [out]
    if cmd == "chat_model":
        return ["chat", "--model", str(inp), "--prompt", "hi", "--max_new_tokens", "2"], []
    if cmd == "serve_model":  # the model loads before the port is bound: a broken one never serves
        return ["serve", str(inp), "--port", "0"], []
    if cmd == "export_model":
        return ["export", str(inp), "--output_dir", str(out)], [out]
    assert cmd == "merge_base", cmd
    return ["merge", str(models.adapter), "--model", str(inp), "--output_dir", str(out)], [out]


CASES = [(name, cmd) for name, (_, _, cmds) in INPUTS.items() for cmd in cmds]


def test_table_covers_the_issue():
    assert len(INPUTS) >= 20
    covered = {cmd.split("_")[0] for _, cmd in CASES}
    assert covered >= {"train", "check", "infer", "eval", "merge", "chat", "serve", "export"}


@pytest.mark.parametrize("name,cmd", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_bad_input_is_one_line_exit_2(name, cmd, models, tmp_path, capsys, monkeypatch):
    from lmforge.data import textio

    monkeypatch.setattr(textio, "MAX_LINE_CHARS", 1000)
    monkeypatch.setenv("LMFORGE_LOG_LEVEL", "WARNING")
    maker, why, _ = INPUTS[name]
    inp, where = maker(tmp_path, models)
    if cmd == "eval_mc":
        where = where.replace(str(inp), str(tmp_path / "bench" / "val" / "math_val.csv"))
    argv, outputs = _command(cmd, inp, tmp_path, models)
    capsys.readouterr()
    try:
        code = main(argv)
    except BaseException as e:  # noqa: BLE001 - in a subprocess this would be a traceback
        pytest.fail(f"{' '.join(argv)} raised {type(e).__name__}: {e}")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("lmforge: error:")]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert where in lines[0] and re.search(why, lines[0]), (where, why, lines[0])
    for path in outputs:
        assert not path.exists(), f"{path} left behind"
    assert not list(tmp_path.rglob("*.tmp*")), "temporary file left behind"


def test_every_row_skipped_is_no_usable_rows(models, tmp_path, capsys):
    """--skip_bad_rows with nothing left: says how many rows were bad and the first one, not a
    misleading "no assistant answer within --max_length"."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"foo": 1}\n{"conversations": 3}\n')
    out = tmp_path / "run"
    argv = ["train", "sft", "--dataset", str(data), "--model_name_or_path", str(models.base)]
    assert main([*argv, "--skip_bad_rows", "true", "--output_dir", str(out), "--max_steps", "1"]) == 2
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lmforge: error:")]
    assert len(line) == 1 and "no usable chat rows (2 bad rows skipped; first: " in line[0], line
    assert f"{data}:1:" in line[0] and not out.exists()


def test_non_utf8_names_line_byte_and_offset(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_bytes(CHAT_LINE.encode() + b"\n" + CHAT_LINE.encode() + b"\n" + b'{"a": "\xff"}\n')
    assert main(["data", "check", "--dataset", str(data)]) == 2
    offset = 2 * (len(CHAT_LINE) + 1) + len('{"a": "')
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lmforge: error:")]
    assert line == [f"lmforge: error: {data}:3: not UTF-8 text (byte 0xff at offset {offset})"]


def test_utf8_scan_across_chunk_boundary(tmp_path, monkeypatch):
    """A multi-byte character split by the scanner's read boundary is not an error; a bad byte after is."""
    from lmforge.data import textio

    monkeypatch.setattr(textio, "_SCAN_CHUNK", 4)
    path = tmp_path / "t.txt"
    good = "ab\n\u00e9\u4e2d\n".encode()  # 2-byte and 3-byte characters, cut at byte 4 and 8
    path.write_bytes(good + b"x\x80")
    err = str(textio.utf8_error(path))
    assert err == f"{path}:3: not UTF-8 text (byte 0x80 at offset {len(good) + 1})"


def test_good_inputs_still_pass(models, tmp_path, capsys):
    """The same commands on intact inputs succeed (the table's errors come from the bad part only)."""
    data = tmp_path / "d.jsonl"
    data.write_text(CHAT_LINE + "\n\n" + CHAT_LINE + "\n")
    assert main(["data", "check", "--dataset", str(data)]) == 0
    pred = tmp_path / "pred.jsonl"
    argv = ["infer", "--model", str(models.base), "--input", str(data), "--output", str(pred)]
    assert main([*argv, "--max_new_tokens", "2", "--lora_weight", str(models.adapter)]) == 0
    assert len(pred.read_text().splitlines()) == 2
    assert main(["merge", str(models.adapter), "--output_dir", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_corrupt_weights_subprocess_has_no_traceback(models, tmp_path):
    """The real CLI process (stderr as a user sees it): one error line naming the file, no traceback."""
    folder = _copy(models.base, tmp_path / "m")
    (folder / "model.safetensors").write_bytes((models.base / "model.safetensors").read_bytes()[:1000])
    data = tmp_path / "d.jsonl"
    data.write_text(CHAT_LINE + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "lmforge", "infer", "--model", str(folder), "--input", str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LMFORGE_LOG_LEVEL": "WARNING"},
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("lmforge: error:")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert str(folder / "model.safetensors") in lines[0]
    assert not (tmp_path / "d.pred.jsonl").exists()
