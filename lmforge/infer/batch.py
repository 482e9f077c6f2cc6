"""`lmforge infer`: batch inference over a CSV / JSONL / JSON file, one prediction per input row.

Rows may be chats (`conversations` / `messages`, role/content or ShareGPT from/value; a final
assistant turn is dropped and kept as `reference`), `{prompt}` (string or messages),
`{instruction, input}` (Alpaca), CSV `user_prompt` / `system_prompt` (mdl-toolkit), or `{text}`
(raw continuation for pretrained base models). Vision models read each row's images from
`--image_column` (default `images`, else `image`): a path, a list of paths, or (CSV) a JSON list;
relative paths are under the input file's folder (or `--base_dir`); the text's `<image>`
placeholders mark where they go (none: before the first user turn's text). The output is JSONL in input order:
`{"id", "prompt", "prediction", "reasoning_content"?, "reference"?, "finish_reason", "usage"}`.
It is written to a temporary file and renamed at the end, so a killed run never leaves a partial
file under the final name.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.formats import chat_messages
from lmforge.data.messages import RowRef, parse_messages, prompt_from, with_system
from lmforge.errors import DataError, LmforgeError
from lmforge.infer.args import EngineArgs, GenerationArgs

logger = logging.getLogger("lmforge")

_REFERENCE_KEYS = ("reference", "answer", "output", "completion", "response", "prediction", "gt")
_FORMS = "conversations/messages, prompt, instruction(+input), user_prompt(+system_prompt) or text"
_WAVE = 16  # batches generated per wave; each wave is written before the next starts


@dataclass
class InferArgs(EngineArgs):
    """Input, output and model of a batch inference run."""

    input: str = field(
        default="",
        metadata={
            "help": "Input file: .csv, .jsonl or .json (list of rows), or a `data convert` folder "
            "(prompts = the tokens before each row's answer)"
        },
    )
    output: str | None = field(
        default=None,
        metadata={
            "help": "Output JSONL (default: <input stem>.pred.jsonl beside the input); a .csv name writes "
            "the input columns plus `prediction` (mdl-toolkit)"
        },
    )
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Prompts generated together, left padded (default 8; 32 for audio models, as mdl-toolkit)."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Most tokens per row, prompt and answer together (mdl-toolkit): the answer stops there, "
            "a longer prompt is an error. Default: text models check only the prompt against the run's "
            "max_length; audio models cap prompt + answer at the run's max_length (else 128, mdl-toolkit's)."
        },
    )
    preprocessing_batch_size: int = field(
        default=8,
        metadata={"help": "Rows whose clips one worker reads at a time (audio models; mdl-toolkit)."},
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Threads that read and resample audio clips (default: half the CPU cores, at most 32)."
        },
    )
    user_prompt: str | None = field(
        default=None,
        metadata={"help": "User prompt for CSV rows whose user_prompt is empty or missing (mdl-toolkit)."},
    )
    base_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder that relative CSV `audio` paths (audio models) and image paths (vision models; "
            "default: the input file's folder) are resolved against."
        },
    )
    image_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of image paths (vision models): a path, a list of paths or a JSON list "
            "(default: `images`, else `image`)."
        },
    )
    system: str | None = field(
        default=None, metadata={"help": "System prompt for rows without one (default: the run's, if any)."}
    )


def resolve_infer_config(argv: list[str]) -> tuple[InferArgs, GenerationArgs]:
    """`infer [CONFIG.yaml] [INPUT] [--key value ...]`: the positional INPUT (mdl-toolkit's
    `inference INPUT`) is `--input`."""
    from lmforge.config.loader import resolve

    cfg = resolve([InferArgs, GenerationArgs], argv, max_positionals=1)
    args = cfg.group(InferArgs)
    if cfg.positionals:
        if args.input:
            raise LmforgeError(
                f"infer: give one input, positional or --input (got {cfg.positionals[0]} and {args.input})"
            )
        args.input = cfg.positionals[0]
    return args, cfg.group(GenerationArgs)


def default_output(input_path: str) -> str:
    """`data/x.jsonl` → `data/x.pred.jsonl`."""
    p = Path(input_path)
    return str(p.with_name(f"{p.stem}.pred.jsonl"))


def read_rows(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) for every row of a CSV, JSONL or JSON-list file; no row at all is an error."""
    from lmforge.data import textio

    if os.path.isdir(path):
        raise LmforgeError(
            f"--input {path}: a folder, and not a `data convert` folder; give one .csv, .jsonl or .json file"
        )
    if not os.path.isfile(path):
        raise LmforgeError(f"--input {path}: file not found")
    seen = 0
    for line, row in _read_raw(path):
        seen += 1
        yield line, row
    if not seen:
        raise textio.no_rows_error(path)


def _read_raw(path: str) -> Iterator[tuple[int, Any]]:
    from lmforge.data import textio

    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        import csv

        with textio.open_text(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None}
    elif suffix == ".json":
        from lmforge.data.load import iter_raw

        with textio.open_text(path, encoding="utf-8-sig") as f:
            start = f.read(4096).lstrip()
        if start and not start.startswith("["):
            raise DataError(path, None, "file", "must be a JSON list of rows (or use .jsonl)")
        for line, row in iter_raw(path, "chat"):  # element by element, with their line numbers
            if isinstance(row, DataError):
                raise row
            yield line, row
    else:
        with textio.open_text(path, encoding="utf-8-sig") as f:
            for n, line in textio.iter_lines(f, path):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, n, "line", "must be one JSON object", e.msg) from None


def _plain(msgs: list[dict]) -> list[dict]:
    """Canonical messages without their empty fields (what the chat template is given)."""
    return [{k: v for k, v in m.items() if v is not None} for m in msgs]


def parse_row(row: Any, path: str, line: int) -> tuple[list[dict] | str, str, str | None]:
    """An input row → (messages or raw text, prompt shown in the output, reference or None).

    Turns, Alpaca and mdl-toolkit CSV rows are parsed by the data layer (`data/messages.py`,
    `data/formats.py`), as for training; a final assistant turn is the reference, not the prompt."""
    if not isinstance(row, dict):
        raise DataError(path, line, "row", "expected a JSON object", type(row).__name__)
    ctx = RowRef(path, line)
    reference = next((row[k] for k in _REFERENCE_KEYS if isinstance(row.get(k), str) and row[k] != ""), None)
    key = next((k for k in ("conversations", "messages") if k in row), None)
    if key or isinstance(row.get("prompt"), list):
        key = key or "prompt"
        msgs = _plain(parse_messages(row[key], key, ctx))
        if not msgs:
            raise DataError(path, line, key, "expected a non-empty list of messages")
        if msgs[-1]["role"] == "assistant":
            reference = msgs.pop()["content"]
        if not msgs or msgs[-1]["role"] not in ("user", "tool"):
            raise DataError(path, line, key, "expected a conversation ending with a user turn")
        system = row.get("system") if isinstance(row.get("system"), str) else None
        return _plain(with_system(msgs, system)), msgs[-1]["content"], reference
    if "prompt" in row:
        system = row.get("system") or row.get("system_prompt") or None
        msgs = _plain(with_system(prompt_from(row["prompt"], "prompt", ctx), system and str(system)))
        return msgs, msgs[-1]["content"], reference
    fmt = "alpaca" if "instruction" in row else "csv" if "user_prompt" in row else None
    if fmt:  # its `output` / `prediction` turn is the reference (one of _REFERENCE_KEYS)
        msgs, _ = chat_messages(row, fmt, ctx, {})
        msgs = _plain(msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs)
        return msgs, msgs[-1]["content"], reference
    if "text" in row:
        if not isinstance(row["text"], str) or not row["text"]:
            raise DataError(path, line, "text", "expected a non-empty string", repr(row["text"])[:40])
        return row["text"], row["text"], reference
    raise DataError(path, line, "row", f"expected one of {_FORMS}", "keys " + ", ".join(list(row)[:8]))


def _has_prompt(row: dict) -> bool:
    return any(row.get(k) for k in ("conversations", "messages", "prompt", "instruction", "text"))


def _converted_rows(args: InferArgs, engine) -> tuple[list, list, list[list[int]]]:
    """A `data convert` folder as input: each row's prompt is its ids before the first trained
    token, its reference the trained tokens; the tokenizer must be the model's."""
    from lmforge.data.convert import check_usable, load_converted

    train, _, meta = load_converted(args.input)
    check_usable(args.input, meta, engine.tokenizer, "chat", None)
    raw, rows, pre = [], [], []
    audio = "audio" in train.column_names
    for i, row in enumerate(train):
        labels = row["labels"]
        start = next((j for j, x in enumerate(labels) if x != -100), None)
        if start is None or start == 0:
            raise DataError(args.input, i + 1, "labels", "a prompt followed by trained answer tokens")
        end = next((j for j in range(start, len(labels)) if labels[j] == -100), len(labels))
        ids = row["input_ids"][:start]
        prompt = engine.tokenizer.decode(ids, skip_special_tokens=False)
        reference = engine.tokenizer.decode(row["input_ids"][start:end], skip_special_tokens=True).strip()
        record = {"id": i, "prompt": prompt, "reference": reference}
        if audio:
            record["audio"] = row["audio"]
        raw.append((i + 1, record))
        rows.append((i + 1, ids, prompt, reference))
        pre.append(ids)
    return raw, rows, pre


def _read_clips(args: InferArgs, raw: list[tuple[int, dict]], engine) -> list | None:
    """Each row's clip (audio models only), read and resampled in chunks of
    `--preprocessing_batch_size` rows by `--preprocessing_num_workers` threads; None for text models.
    The first bad row in input order is the one reported."""
    if not hasattr(engine, "generate_audio"):
        return None
    from concurrent.futures import ThreadPoolExecutor

    from lmforge.data.audio import load_audio
    from lmforge.models.audio import sampling_rate

    rate = sampling_rate(engine.processor)

    def read(chunk: list[tuple[int, dict]]) -> list:
        waves = []
        for line, row in chunk:
            path = row.get("audio") if isinstance(row, dict) else None
            if not isinstance(path, str) or not path:
                raise DataError(
                    args.input, line, "audio", "a clip path (this is an audio model)", repr(path)[:40]
                )
            if args.base_dir and not os.path.isabs(path):
                path = os.path.join(args.base_dir, path)
            waves.append(load_audio(path, rate, row=f"{args.input}:{line}"))
        return waves

    size = max(1, args.preprocessing_batch_size)
    workers = args.preprocessing_num_workers or min(32, max(1, (os.cpu_count() or 2) // 2))
    chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [wave for waves in pool.map(read, chunks) for wave in waves]


def _image_paths(args: InferArgs, line: int, row: Any) -> list[str]:
    """The row's image paths from `--image_column` (default images / image), resolved against
    --base_dir or the input file's folder."""
    from lmforge.data.vision import resolve_media_path

    if not isinstance(row, dict):
        return []
    key = args.image_column or next((k for k in ("images", "image") if k in row), None)
    value = row.get(key) if key else None
    if isinstance(value, str) and value.strip().startswith("["):  # a CSV cell holding a JSON list
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(args.input, line, key, "a path or a JSON list of paths", e.msg) from None
    if value in (None, ""):
        return []
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise DataError(args.input, line, key, "a path or a list of paths", repr(value)[:60])
    base = args.base_dir or os.path.dirname(os.path.abspath(args.input))
    return [resolve_media_path(p, base_dir=base) for p in paths]


def _check_image_column(args: InferArgs, raw: list[tuple[int, Any]], vision: bool) -> None:
    """A text-only model given rows with images fails at the first such row (images are never
    silently dropped); an --image_column no row has is an error too."""
    if args.image_column and not any(isinstance(r, dict) and args.image_column in r for _, r in raw):
        raise LmforgeError(f"--image_column {args.image_column}: no row of {args.input} has this column")
    if vision:
        return
    for line, row in raw:
        if _image_paths(args, line, row):
            raise DataError(
                args.input, line, "images", "no images: this model is not a vision-language model"
            )


def _length_limit(args: InferArgs, engine, audio: bool) -> tuple[int | None, bool, str]:
    """(token limit, whether it counts the answer too, where it comes from). An explicit
    --max_length caps prompt + answer (mdl-toolkit); audio models default to the run's max_length
    (else mdl-toolkit's 128) the same way; text models check the prompt against the run's."""
    run_limit = engine.run_args.get("max_length")
    if args.max_length:
        return int(args.max_length), True, "--max_length"
    if audio:
        source = "max_length of the run" if run_limit else "mdl-toolkit's default max_length"
        return int(run_limit or 128), True, f"{source} (set --max_length to change)"
    return run_limit, False, "max_length of the run (set --max_length to change)"


def _text_prompt(engine, text: str, gen_args: GenerationArgs):
    """A raw-text row (no images) for a vision engine's batches."""
    from lmforge.infer.vision import VisionPrompt

    return VisionPrompt(engine.encode(text, gen_args))


def run_infer(infer_args: InferArgs, gen_args: GenerationArgs, *, engine=None) -> str:
    """Predict every row of `infer_args.input`; returns the output path. `engine` skips loading."""
    args = infer_args
    if not args.input:
        raise LmforgeError("--input is required (a .csv, .jsonl or .json file)")
    if args.batch_size is not None and args.batch_size < 1:
        raise LmforgeError(f"--batch_size {args.batch_size}: must be at least 1")
    from lmforge.data.convert import is_converted

    converted = is_converted(args.input)
    if not converted:  # every row is read and checked before the model is loaded
        raw = list(read_rows(args.input))
        if args.user_prompt:
            for _, row in raw:
                if isinstance(row, dict) and not row.get("user_prompt") and not _has_prompt(row):
                    row["user_prompt"] = args.user_prompt
        rows = [(line, *parse_row(row, args.input, line)) for line, row in raw]
        pre = None
    if engine is None:
        from lmforge.infer.chat import load_engine

        engine = load_engine(args)  # type: ignore[arg-type]
    if converted:
        raw, rows, pre = _converted_rows(args, engine)
    if args.system is not None:
        engine.system = args.system
    waves = _read_clips(args, raw, engine)
    vision = hasattr(engine, "encode_vision") and not converted
    if not converted:
        _check_image_column(args, raw, vision)
    prompts = [] if vision else None
    if args.batch_size is None:
        args.batch_size = 8 if waves is None else 32  # mdl-toolkit's inference batch for audio models
    limit, total, source = _length_limit(args, engine, waves is not None)
    engine.total_length = limit if total else None
    encoded = []
    for idx, (line, item, _, _) in enumerate(rows):
        if pre is not None:  # a converted folder: the prompt ids as they were tokenised for training
            ids = pre[idx]
        elif waves is not None:
            if isinstance(item, str):
                raise DataError(
                    args.input, line, "row", "an audio model needs a prompt (user_prompt), not raw text"
                )
            ids = engine.encode_audio(item, waves[idx], gen_args)
        elif prompts is not None:
            paths = _image_paths(args, line, raw[idx][1])
            if isinstance(item, str):
                if paths:
                    raise DataError(args.input, line, "row", "rows with images need a prompt, not raw text")
            prompt = (
                engine.encode_vision(item, paths, gen_args, where=f"{args.input}:{line}", lazy=True)
                if not isinstance(item, str)
                else _text_prompt(engine, item, gen_args)
            )
            prompts.append(prompt)
            ids = prompt.ids
        else:
            ids = engine.encode(item, gen_args)
        where = f"{args.input}:{line}: row {idx}"
        if limit and total and len(ids) >= limit:
            rel = "more than" if len(ids) > limit else "as long as"
            raise LmforgeError(
                f"{where} has a {len(ids)}-token prompt, {rel} {source} {limit} (which counts prompt and "
                "answer together)"
            )
        if limit and not total and len(ids) > int(limit):
            raise LmforgeError(f"{where} has a {len(ids)}-token prompt, more than {source} {limit}")
        engine.check_length(ids, gen_args, where=where)
        encoded.append(ids)
    out_path = args.output or default_output(args.input)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{out_path}.tmp-{os.getpid()}"
    wave = args.batch_size * _WAVE
    as_csv = Path(out_path).suffix.lower() == ".csv"
    try:
        with open(tmp, "w", encoding="utf-8", newline="" if as_csv else None) as f:
            writer = None
            if as_csv:  # mdl-toolkit: the input columns plus `prediction`
                import csv

                columns = list(dict.fromkeys([k for _, r in raw for k in r if k != "prediction"]))
                writer = csv.DictWriter(f, fieldnames=[*columns, "prediction"], extrasaction="ignore")
                writer.writeheader()
            for start in range(0, len(rows), wave):
                if waves is not None:
                    done = engine.generate_audio(
                        encoded[start : start + wave],
                        waves[start : start + wave],
                        gen_args,
                        batch_size=args.batch_size,
                    )
                elif prompts is not None:
                    done = engine.generate_vision(
                        prompts[start : start + wave], gen_args, batch_size=args.batch_size
                    )
                else:
                    done = engine.generate_ids(
                        encoded[start : start + wave], gen_args, batch_size=args.batch_size
                    )
                for idx, comp in enumerate(done, start):
                    if writer is not None:
                        writer.writerow({**raw[idx][1], "prediction": comp.text})
                        continue
                    _, _, prompt, reference = rows[idx]
                    rec: dict[str, Any] = {"id": idx, "prompt": prompt, "prediction": comp.text}
                    if comp.reasoning_content is not None:
                        rec["reasoning_content"] = comp.reasoning_content
                    if reference is not None:
                        rec["reference"] = reference
                    rec.update(finish_reason=comp.finish_reason, usage=comp.usage)
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                logger.info("infer: %d/%d rows", min(start + wave, len(rows)), len(rows))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path
