"""Issue 9, data toolkit: `data convert` folders, cache fingerprints, `data check`, registry
sampling and mixing proportions, and streaming a file larger than the memory it may use."""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from lmforge.cli import main
from lmforge.data import convert
from lmforge.data.load import iter_rows_streaming, load_rows
from lmforge.errors import LmforgeError

TRAIN_FLAGS = ["--preset", "tiny", "--from_weight", "none", "--max_steps", "1", "--logging_steps", "1"]
TRAIN_FLAGS += ["--per_device_train_batch_size", "4", "--plot", "false", "--report_to", "none"]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def chat(i):
    return {
        "conversations": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    }


def run_cli(*args):
    return main([str(a) for a in args])


def first_loss(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return next(r["loss"] for r in map(json.loads, f) if "loss" in r)


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "clips.csv"
    path.write_text(
        "system_prompt,user_prompt,prediction\n"
        ",What is two plus two?,four\n"
        "Answer in one word.,Capital of France?,Paris\n"
        ",,yes\n",
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------------------ data convert


def test_convert_csv_applies_prompt_defaults_and_labels(tmp_path, csv_file, tokenizer, capsys):
    out = tmp_path / "conv"
    code = run_cli(
        "data", "convert", csv_file, "--output", out, "--system_prompt", "You label clips.",
        "--user_prompt", "Is it a tone?", "--max_length", "64", "--from_weight", "none", "--num_proc", "1",
    )  # fmt: skip
    assert code == 0 and "3 training sequences" in capsys.readouterr().out
    train, val, meta = convert.load_converted(str(out))
    assert val is None and meta["kind"] == "chat" and meta["options"]["max_length"] == 64
    assert len(train) == 3 and {"input_ids", "labels"} <= set(train.column_names)
    texts = [tokenizer.decode(ids) for ids in train["input_ids"]]
    targets = [tokenizer.decode([t for t in lab if t != -100]) for lab in train["labels"]]
    assert targets == ["four<|im_end|>", "Paris<|im_end|>", "yes<|im_end|>"]
    # a non-empty column wins over the default; an empty cell falls back to it
    assert "You label clips." in texts[0] and "What is two plus two?" in texts[0]
    assert "Answer in one word." in texts[1] and "You label clips." not in texts[1]
    assert "Is it a tone?" in texts[2]


def test_convert_minimind_jsonl_and_val_split(tmp_path, synth_dir, capsys):
    out = tmp_path / "sft"
    code = run_cli(
        "data", "convert", "sft", synth_dir / "sft.jsonl", "--output", out, "--val_size", "0.1",
        "--max_length", "128", "--from_weight", "none",
    )  # fmt: skip
    assert code == 0
    num_rows = sum(1 for _ in open(synth_dir / "sft.jsonl"))
    train, val, meta = convert.load_converted(str(out))
    assert len(val) == round(num_rows * 0.1) and len(train) + len(val) == num_rows
    assert meta["num_train"] == len(train) and max(len(x) for x in train["input_ids"]) <= 128


def test_train_from_converted_folder_gives_the_same_first_loss(tmp_path, synth_dir, one_thread):
    from lmforge.pipeline import run_train

    data = str(synth_dir / "sft.jsonl")
    out = tmp_path / "conv"
    assert (
        run_cli(
            "data", "convert", "sft", data, "--output", out, "--max_length", "96", "--from_weight", "none"
        )
        == 0
    )
    raw = run_train(
        "sft", ["--dataset", data, "--max_length", "96", "--output_dir", str(tmp_path / "a"), *TRAIN_FLAGS]
    )
    conv = run_train("sft", ["--dataset", str(out), "--output_dir", str(tmp_path / "b"), *TRAIN_FLAGS])
    assert first_loss(raw) == pytest.approx(first_loss(conv), rel=1e-6, abs=0)
    # a folder made for another kind of stage is refused with one line
    pre = tmp_path / "pre"
    assert (
        run_cli(
            "data", "convert", "pretrain", synth_dir / "pretrain.jsonl", "--output", pre, "--max_length", "32"
        )
        == 0
    )
    with pytest.raises(LmforgeError, match=r"converted for stage 'pretrain'.*needs chat rows"):
        run_train("sft", ["--dataset", str(pre), "--output_dir", str(tmp_path / "c"), *TRAIN_FLAGS])


def test_fingerprint_rebuilds_on_max_length_template_and_file_change(tmp_path, tokenizer, capsys):
    long_answer = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "yes " * 80}]
    data = write_jsonl(tmp_path / "d.jsonl", [{"conversations": long_answer}] * 12)
    out = tmp_path / "cache"
    base = ["data", "convert", data, "--output", out, "--from_weight", "none"]

    def stamp():
        return (out / convert.META_NAME).stat().st_mtime_ns, convert.read_meta(str(out))["key"]

    assert run_cli(*base, "--max_length", "128") == 0
    first = stamp()
    assert run_cli(*base, "--max_length", "128") == 0
    assert stamp() == first and "up to date" in capsys.readouterr().out.splitlines()[-1]
    assert run_cli(*base, "--max_length", "48") == 0
    assert stamp()[1] != first[1]
    train, _, _ = convert.load_converted(str(out))
    assert max(len(x) for x in train["input_ids"]) == 48  # rebuilt: the long answers are truncated
    changed = tmp_path / "tok"
    tokenizer.save_pretrained(changed)
    cfg = json.loads((changed / "tokenizer_config.json").read_text())
    template = (changed / "chat_template.jinja") if (changed / "chat_template.jinja").exists() else None
    if template is not None:
        template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|>", 1) + "\n")
    else:
        cfg["chat_template"] = cfg["chat_template"] + "\n"
        (changed / "tokenizer_config.json").write_text(json.dumps(cfg))
    before = stamp()
    assert run_cli(*base, "--max_length", "48", "--tokenizer_path", changed) == 0
    assert stamp()[1] != before[1]
    before = stamp()
    with open(data, "a") as f:
        f.write(json.dumps(chat(99)) + "\n")
    assert run_cli(*base, "--max_length", "48", "--tokenizer_path", changed) == 0
    assert stamp()[1] != before[1] and len(convert.load_converted(str(out))[0]) == 13


def test_one_code_fingerprint_follows_the_stage_and_the_source(tmp_path, monkeypatch):
    """The tokenised cache hashes data's modules and the stage's own (found from its imports, not
    listed by path); editing any of them gives another fingerprint."""
    from lmforge.data import fingerprint
    from lmforge.data.load import ROW_CODE

    assert "lmforge.training.preference" in convert.stage_code("dpo")  # dpo tokenises pairs there
    assert {"lmforge.training.audio", "lmforge.training.vision"} <= set(convert.stage_code("sft"))
    assert set(ROW_CODE) <= set(convert.FEATURE_CODE)  # the row cache's code is part of the features'
    (tmp_path / "fp_probe.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = fingerprint.code_fingerprint(["fp_probe", *ROW_CODE])
    fingerprint._source.cache_clear()
    (tmp_path / "fp_probe.py").write_text("X = 2\n")
    assert fingerprint.code_fingerprint(["fp_probe", *ROW_CODE]) != before


def test_convert_errors_are_one_line(tmp_path, csv_file, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert run_cli("data", "convert", csv_file, "--output", tmp_path / "notes") == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    bad = tmp_path / "bad.csv"
    bad.write_text("user_prompt,prediction\nhello,\n")
    assert run_cli("data", "convert", bad, "--output", tmp_path / "o", "--from_weight", "none") == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("lmforge: error: ")
    assert "bad.csv:2:" in err.splitlines()[-1] and "prediction" in err.splitlines()[-1]
    assert run_cli("data", "convert", "--output", tmp_path / "o") == 2
    assert "INPUT" in capsys.readouterr().err


def test_arrow_and_save_to_disk_inputs(tmp_path):
    import datasets

    rows = [chat(i) for i in range(5)]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = next(p for p in (tmp_path / "saved").iterdir() if p.suffix == ".arrow")
    got, _ = load_rows(str(arrow), "chat", cache_dir=str(tmp_path / "c"))
    assert [m["content"] for m in got[4]["messages"]] == ["q4", "a4"]
    folder, _ = load_rows(str(tmp_path / "saved"), "chat", cache_dir=str(tmp_path / "c"))
    assert len(folder) == 5


# ------------------------------------------------------------------------------------ data check


def test_data_check_histogram_png_and_problem_rows(tmp_path, capsys):
    rows = [chat(i) for i in range(6)] + [{"conversations": 3}]
    rows[2] = chat(2) | {"system": "long " * 100}
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    png = tmp_path / "hist.png"
    code = run_cli("data", "check", data, "--max_length", "64", "--plot_path", png)
    out = capsys.readouterr().out
    assert code == 1  # a bad row
    assert "rows: 6   bad: 1" in out and "d.jsonl:7:" in out
    assert "rows over max_length (truncated in training): 3" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


# ------------------------------------------------------------------------------- registry, mixing


@pytest.fixture
def registry(tmp_path):
    import yaml

    write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(1000)])
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(1000)])
    (tmp_path / "qa.csv").write_text(
        "question,answer\n" + "".join(f"q{i},r{i}\n" for i in range(40)), encoding="utf-8"
    )
    entries = {
        "alpha": {"file_name": "a.jsonl"},
        "beta": {"file_name": "b.jsonl"},
        "qa": {
            "file_name": "qa.csv",
            "formatting": "alpaca",
            "columns": {"prompt": "question", "response": "answer"},
        },
    }
    (tmp_path / "dataset_info.yaml").write_text(yaml.safe_dump(entries))
    return tmp_path


def share(texts, prefix="a"):
    return sum(t.startswith(prefix) for t in texts) / len(texts)


def test_registry_sampling_and_column_mapping(registry):
    kw = {"dataset_dir": str(registry), "cache_dir": str(registry / "cache")}
    ds, _ = load_rows("alpha#300,beta#100", "pretrain", **kw)
    assert Counter(t[0] for t in ds["text"]) == {"a": 300, "b": 100}
    assert len(set(ds["text"])) == 400  # without replacement
    qa, _ = load_rows("qa#10", "chat", **kw)
    assert len(qa) == 10 and all(
        r["messages"][1]["content"] == "r" + r["messages"][0]["content"][1:] for r in qa
    )


@pytest.mark.parametrize("strategy", ["interleave_under", "interleave_over"])
def test_interleave_probs_give_requested_proportions(registry, strategy):
    kw = {"dataset_dir": str(registry), "cache_dir": str(registry / "cache"), "seed": 7}
    ds, _ = load_rows("alpha,beta", "pretrain", mix_strategy=strategy, interleave_probs="0.8,0.2", **kw)
    assert share(ds["text"]) == pytest.approx(0.8, abs=0.04)
    if strategy == "interleave_under":  # stops when alpha runs out
        assert Counter(t[0] for t in ds["text"])["a"] == 1000
    else:  # goes on until beta has been seen whole, oversampling alpha
        assert {t for t in ds["text"] if t[0] == "b"} == {f"b{i}" for i in range(1000)}
    streamed = list(
        iter_rows_streaming("alpha,beta", "pretrain", mix_strategy=strategy, interleave_probs="0.3,0.7", **kw)
    )
    assert share([r["text"] for r in streamed[:1000]]) == pytest.approx(0.3, abs=0.05)


def test_val_dataset_and_val_size_flags_reach_training(registry, tmp_path, one_thread):
    from lmforge.pipeline import run_train

    flags = ["--dataset", "alpha#40", "--dataset_dir", str(registry), "--max_length", "16", *TRAIN_FLAGS]
    flags += ["--eval_strategy", "steps", "--eval_steps", "1"]
    run = run_train("pretrain", [*flags, "--val_dataset", "beta#8", "--output_dir", str(tmp_path / "v")])
    with open(os.path.join(run, "metrics.jsonl")) as f:
        assert any("eval_loss" in r for r in map(json.loads, f))
    with pytest.raises(LmforgeError, match="val_size"):
        run_train("pretrain", [*flags, "--val_size", "40", "--output_dir", str(tmp_path / "w")])


# ---------------------------------------------------------------------------------------- streaming

STREAM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from lmforge.pipeline import run_train

    def status(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

    small, big, out = sys.argv[1:4]
    flags = ["--streaming", "--skip_bad_rows", "--max_steps", "2", "--preset", "tiny", "--from_weight",
             "none", "--max_length", "32", "--per_device_train_batch_size", "2", "--plot", "false",
             "--report_to", "none", "--logging_steps", "1", "--save_strategy", "no"]
    run_train("sft", ["--dataset", small, "--output_dir", out + "/warm", *flags])  # imports, allocator
    try:  # reset the peak (VmHWM) so it measures the big run alone
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status("VmRSS")
    run_train("sft", ["--dataset", big, "--output_dir", out + "/big", *flags])
    print(json.dumps({"growth": status("VmHWM") - before}))
    """
)


def test_streaming_a_file_larger_than_the_memory_cap(tmp_path):
    """A 96 MB file: 48 MB of bad rows (skipped) the stream must read through, then ~48 MB of small
    chat rows that an Arrow cache would copy. Training must finish with peak RSS growing by at most a
    quarter of the file and (unlike the non-streaming path) without writing the rows to a cache."""
    big = tmp_path / "big.jsonl"
    junk = json.dumps({"junk": "x" * 8000}) + "\n"
    rows = "".join(json.dumps(chat(i)) + "\n" for i in range(1000))
    with open(big, "w") as f:
        while f.tell() < 48 * 2**20:
            f.write(junk * 64)
        while f.tell() < 96 * 2**20:
            f.write(rows)
    size = big.stat().st_size
    small = write_jsonl(tmp_path / "small.jsonl", [chat(i) for i in range(16)])
    env = dict(os.environ, HF_DATASETS_CACHE=str(tmp_path / "hf"), LMFORGE_LOG_LEVEL="WARNING")
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, small, str(big), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    growth = json.loads(res.stdout.strip().splitlines()[-1])["growth"]
    assert growth < size / 4, f"peak RSS grew {growth / 2**20:.0f} MB streaming a {size / 2**20:.0f} MB file"
    with open(tmp_path / "runs" / "big" / "metrics.jsonl") as f:
        assert max(r.get("step", 0) for r in map(json.loads, f)) == 2
    cached = (
        sum(p.stat().st_size for p in (tmp_path / "hf").rglob("*") if p.is_file())
        if (tmp_path / "hf").exists()
        else 0
    )
    assert cached < size / 100


# ------------------------------------------------------------------------------------ audio clips


def peak_hz(x, rate):
    spectrum = abs(__import__("numpy").fft.rfft(x))
    return spectrum.argmax() * rate / len(x)


@pytest.mark.parametrize("scipy_present", [True, False])
def test_audio_from_csv_is_resampled_mono(tmp_path, monkeypatch, scipy_present):
    import wave

    import numpy as np

    from lmforge.data.audio import load_audio, tone, write_wav

    if not scipy_present:  # the numpy fallback must keep the pitch too
        monkeypatch.setitem(sys.modules, "scipy.signal", None)
    clips = tmp_path / "clips"
    write_wav(str(clips / "a440.wav"), tone(440, 1.0, 44100), 44100)
    stereo = np.stack([tone(1000, 0.5, 8000), np.zeros(4000)], axis=1)  # 8-bit, 8 kHz, right silent
    with wave.open(str(clips / "b1k.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(1)
        f.setframerate(8000)
        f.writeframes((stereo * 127 + 128).round().astype(np.uint8).tobytes())
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("audio,user_prompt,prediction\na440.wav,pitch?,low\nb1k.wav,pitch?,high\n")
    rows, _ = load_rows(str(csv_path), "chat", base_dir=str(clips), cache_dir=str(tmp_path / "c"))
    a, b = (load_audio(r["audio"], 16000, row=f"{csv_path}:{i + 2}") for i, r in enumerate(rows))
    assert len(a) == 16000 and len(b) == 8000 and a.dtype == np.float32
    assert peak_hz(a, 16000) == pytest.approx(440, abs=3) and peak_hz(b, 16000) == pytest.approx(1000, abs=3)
    assert np.abs(a[2000:-2000]).max() == pytest.approx(0.5, abs=0.03)
    assert np.abs(b[1000:-1000]).max() == pytest.approx(0.25, abs=0.03)  # mixed down with silence


def test_audio_errors_name_the_row_and_file(tmp_path):
    from lmforge.data.audio import load_audio

    with pytest.raises(LmforgeError, match=r"^d\.csv:3: audio .*nope\.wav: no such file"):
        load_audio(str(tmp_path / "nope.wav"), row="d.csv:3")
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(LmforgeError, match=r"junk\.wav: not a readable PCM WAV file"):
        load_audio(str(tmp_path / "junk.wav"))
    (tmp_path / "x.flac").write_bytes(b"fLaC")
    try:  # soundfile is the [audio] extra: without it the message says how to install it
        import soundfile  # noqa: F401
    except ImportError:
        with pytest.raises(LmforgeError, match=r'pip install "lmforge\[audio\]"'):
            load_audio(str(tmp_path / "x.flac"))
    else:
        with pytest.raises(LmforgeError, match="unreadable audio"):
            load_audio(str(tmp_path / "x.flac"))


# ------------------------------------------------------------------------------------ infer input


def test_infer_on_converted_folder_and_csv_output(tmp_path, csv_file, capsys):
    """`infer` on a converted folder uses the training prompts (same greedy answers as the raw CSV);
    a .csv --output keeps the input columns and adds `prediction` in input order."""
    model = str(tmp_path / "m")
    assert run_cli("init", "--preset", "tiny", "--output_dir", model) == 0
    conv = str(tmp_path / "conv")
    prompt = ["--user_prompt", "Say yes."]
    assert (
        run_cli("data", "convert", "sft", csv_file, "--output", conv, "--model_name_or_path", model, *prompt)
        == 0
    )
    gen = ["--max_new_tokens", "5", "--temperature", "0", "--model", model, *prompt]
    assert run_cli("infer", "--input", csv_file, "--output", tmp_path / "raw.jsonl", *gen) == 0
    assert run_cli("infer", "--input", conv, "--output", tmp_path / "conv.jsonl", *gen) == 0
    assert run_cli("infer", "--input", csv_file, "--output", tmp_path / "out.csv", *gen) == 0
    raw, conv_rows = ([json.loads(x) for x in open(tmp_path / n)] for n in ("raw.jsonl", "conv.jsonl"))
    assert [r["prediction"] for r in raw] == [r["prediction"] for r in conv_rows]
    assert [r["reference"] for r in conv_rows] == ["four", "Paris", "yes"]
    import csv

    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as f:
        out = list(csv.DictReader(f))
    assert list(out[0]) == ["system_prompt", "user_prompt", "prediction"]
    assert [r["user_prompt"] for r in out] == ["What is two plus two?", "Capital of France?", "Say yes."]
    assert [r["prediction"] for r in out] == [r["prediction"] for r in raw]
