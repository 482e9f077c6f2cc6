"""load.py / check.py: files of every type, specifiers, registry, mixing, errors, caching, streaming."""

import csv
import gc
import json
import os
import time

import pytest

from lmforge.data.check import check_dataset, format_report
from lmforge.data.load import iter_rows_streaming, load_rows, load_val, split_val
from lmforge.errors import DataError, LmforgeError


def m(role, content, reasoning=None, tool_calls=None):
    return {"role": role, "content": content, "reasoning_content": reasoning, "tool_calls": tool_calls}


def chat_row(i):
    return {
        "conversations": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    }


def expected_chat(i):
    return {"messages": [m("user", f"q{i}"), m("assistant", f"a{i}")], "tools": None}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return str(path)


@pytest.fixture
def load(tmp_path):
    cache = str(tmp_path / "cache")

    def _load(spec, kind, **kw):
        return load_rows(spec, kind, cache_dir=cache, **kw)

    return _load


# ---------------------------------------------------------------------------- file types


def test_jsonl_chat_round_trip(tmp_path, load):
    path = write_jsonl(tmp_path / "sft.jsonl", [chat_row(i) for i in range(5)])
    ds, stats = load(path, "chat")
    assert list(ds) == [expected_chat(i) for i in range(5)]
    assert stats.num_rows == 5 and stats.num_bad == 0 and stats.formats == {"minimind": 5}


def test_json_list_and_json_lines(tmp_path, load):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(3)
    ]
    (tmp_path / "list.json").write_text(json.dumps(rows, indent=2))
    ds, stats = load(str(tmp_path / "list.json"), "chat")
    assert list(ds) == [expected_chat(i) for i in range(3)] and stats.formats == {"openai": 3}
    write_jsonl(tmp_path / "lines.json", rows)
    ds, _ = load(str(tmp_path / "lines.json"), "chat")
    assert list(ds) == [expected_chat(i) for i in range(3)]


def test_json_list_bad_element_names_its_line(tmp_path, load):
    text = '[\n  {"text": "a"},\n  {"text": ""}\n]\n'
    (tmp_path / "p.json").write_text(text)
    with pytest.raises(DataError, match=r'p\.json:3: "text" must not be empty'):
        load(str(tmp_path / "p.json"), "pretrain")


def test_txt_pretrain(tmp_path, load):
    (tmp_path / "corpus.txt").write_text("first line\n\nsecond line\n")
    ds, _ = load(str(tmp_path / "corpus.txt"), "pretrain")
    assert ds["text"] == ["first line", "second line"]
    with pytest.raises(LmforgeError, match="pretrain text"):
        load(str(tmp_path / "corpus.txt"), "chat")


def test_text_column(tmp_path, load):
    path = write_jsonl(tmp_path / "p.jsonl", [{"body": "x", "id": 1}, {"body": "y", "id": 2}])
    ds, _ = load(path, "pretrain", text_column="body")
    assert ds["text"] == ["x", "y"]


def test_csv_mdl_toolkit_defaults_and_audio(tmp_path, load):
    path = tmp_path / "clips.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audio", "user_prompt", "prediction"])
        w.writerow(["a/1.wav", "", "dog"])
        w.writerow(["a/2.wav", "Which animal, exactly?", "cat, maybe\nor lynx"])
    ds, _ = load(
        str(path), "chat", system_prompt="You label sounds.", user_prompt="Which animal?", base_dir="/clips"
    )
    assert ds.column_names == ["messages", "tools", "audio"]
    assert ds[0] == {
        "messages": [m("system", "You label sounds."), m("user", "Which animal?"), m("assistant", "dog")],
        "tools": None,
        "audio": "/clips/a/1.wav",
    }
    assert ds[1]["messages"][1:] == [
        m("user", "Which animal, exactly?"),
        m("assistant", "cat, maybe\nor lynx"),
    ]


def test_csv_bad_row_line_number_counts_multiline_cells(tmp_path, load):
    path = tmp_path / "d.csv"
    path.write_text('user_prompt,prediction\n"multi\nline",ok\nq,\n')
    with pytest.raises(DataError) as info:
        load(str(path), "chat")
    assert str(info.value).startswith(f"{path}:4: ")


def test_tsv_and_parquet(tmp_path, load):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "t.tsv").write_text("text\tid\nhello\t1\nworld\t2\n")
    ds, _ = load(str(tmp_path / "t.tsv"), "pretrain")
    assert ds["text"] == ["hello", "world"]
    table = pa.table({"prompt": ["q1", "q2"], "chosen": ["g1", "g2"], "rejected": ["b1", "b2"]})
    pq.write_table(table, tmp_path / "pref.parquet")
    ds, stats = load(str(tmp_path / "pref.parquet"), "preference")
    assert ds[1] == {
        "prompt": [m("user", "q2")],
        "chosen": [m("assistant", "g2")],
        "rejected": [m("assistant", "b2")],
    }
    assert stats.formats == {"trl": 2}


def test_folder_reads_data_files_sorted(tmp_path, load):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [{"text": "b"}])
    write_jsonl(folder / "a.jsonl", [{"text": "a"}])
    (folder / "c.txt").write_text("c\n")
    (folder / "notes.md").write_text("ignored")
    ds, _ = load(str(folder), "pretrain")
    assert ds["text"] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "kind,row,expected",
    [
        (
            "kto",
            {"prompt": "q", "completion": "a", "label": "true"},
            {"prompt": [m("user", "q")], "completion": [m("assistant", "a")], "label": True},
        ),
        (
            "prompt",
            {
                "conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "无"}],
                "gt": ["5"],
            },
            {"prompt": [m("user", "q")], "answer": "5"},
        ),
    ],
)
def test_other_kinds_through_arrow(tmp_path, load, kind, row, expected):
    ds, _ = load(write_jsonl(tmp_path / f"{kind}.jsonl", [row]), kind)
    assert ds[0] == expected


# ---------------------------------------------------------------------------- errors


def test_first_bad_row_is_one_line_with_file_and_line(tmp_path, load):
    path = write_jsonl(tmp_path / "sft.jsonl", [chat_row(0), chat_row(1), {"conversations": "oops"}])
    with pytest.raises(DataError) as info:
        load(path, "chat")
    msg = str(info.value)
    assert msg == f'{path}:3: "conversations" must be a list of {{role, content}}; got str "oops"'
    assert info.value.__cause__ is None and "\n" not in msg


def test_invalid_json_line(tmp_path, load):
    path = write_jsonl(tmp_path / "bad.jsonl", [chat_row(0), '{"conversations": [', chat_row(2)])
    with pytest.raises(DataError, match=r'bad\.jsonl:2: "json" must be a valid JSON object'):
        load(path, "chat")


def test_skip_bad_rows_counts_and_continues(tmp_path, load):
    rows = [chat_row(0), "not json", {"conversations": []}, chat_row(3), {"text": "wrong kind"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    ds, stats = load(path, "chat", skip_bad_rows=True)
    assert list(ds) == [expected_chat(0), expected_chat(3)]
    assert stats.num_bad == 3 and stats.num_rows == 2
    assert [msg.split(": ")[0] for msg in stats.bad_examples] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    # cached second load reports the same stats
    _, again = load(path, "chat", skip_bad_rows=True)
    assert again == stats


def test_missing_dataset_is_user_error(tmp_path, load, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LmforgeError, match="'nope' not found"):
        load("nope", "chat")


# ---------------------------------------------------------------------------- cache


def test_cache_rebuilds_when_file_or_options_change(tmp_path, load):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "one"}])
    assert load(path, "pretrain")[0]["text"] == ["one"]
    time.sleep(0.01)
    write_jsonl(path, [{"text": "two"}, {"text": "three"}])
    assert load(path, "pretrain")[0]["text"] == ["two", "three"]
    chat = write_jsonl(tmp_path / "c.jsonl", [chat_row(0)])
    assert load(chat, "chat")[0][0]["messages"][0]["role"] == "user"
    assert load(chat, "chat", system="S")[0][0]["messages"][0] == m("system", "S")


# ---------------------------------------------------------------------------- specifiers


def test_sample_n_is_deterministic(tmp_path, load):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": str(i)} for i in range(50)])
    a, _ = load(f"{path}#10", "pretrain", seed=1)
    b, _ = load(f"{path}#10", "pretrain", seed=1)
    c, _ = load(f"{path}#10", "pretrain", seed=2)
    assert len(a) == 10 and a["text"] == b["text"] and a["text"] != c["text"]
    assert len(set(a["text"])) == 10
    over, _ = load(f"{path}#120", "pretrain")
    assert len(over) == 120 and sorted(set(over["text"])) == sorted(str(i) for i in range(50))


def test_mixing_strategies(tmp_path, load):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(4)])
    ds, stats = load(f"{a},{b}", "pretrain")
    assert len(ds) == 14 and ds["text"][:1] == ["a0"] and stats.num_rows == 14
    under, _ = load(f"{a},{b}", "pretrain", mix_strategy="interleave_under")
    assert under["text"][:4] == ["a0", "b0", "a1", "b1"] and len(under) == 8
    over, _ = load(f"{a},{b}", "pretrain", mix_strategy="interleave_over", interleave_probs="0.5,0.5", seed=3)
    assert {t for t in over["text"]} >= {f"a{i}" for i in range(10)}
    with pytest.raises(LmforgeError, match="interleave_probs"):
        load(f"{a},{b}", "pretrain", mix_strategy="interleave_under", interleave_probs=[0.9])
    with pytest.raises(LmforgeError, match="mix_strategy"):
        load(f"{a},{b}", "pretrain", mix_strategy="zip")


def test_mixing_csv_with_audio_and_jsonl(tmp_path, load):
    (tmp_path / "c.csv").write_text("audio,user_prompt,prediction\nx.wav,q,a\n")
    j = write_jsonl(tmp_path / "j.jsonl", [chat_row(0)])
    ds, _ = load(f"{tmp_path / 'c.csv'},{j}", "chat")
    assert ds["audio"] == [os.path.abspath("x.wav"), None]  # relative to the cwd without --base_dir


def test_registry_alpaca_and_sharegpt(tmp_path, load, monkeypatch):
    write_jsonl(tmp_path / "alp.jsonl", [{"q": "Do", "ctx": "it", "a": "done", "sys": "S"}])
    write_jsonl(
        tmp_path / "sg.jsonl",
        [{"dialog": [{"speaker": "me", "text": "hi"}, {"speaker": "bot", "text": "hello"}], "gt": "x"}],
    )
    registry = {
        "my_alpaca": {
            "file_name": "alp.jsonl",
            "formatting": "alpaca",
            "columns": {"prompt": "q", "query": "ctx", "response": "a", "system": "sys"},
        },
        "my_sharegpt": {
            "file_name": "sg.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog"},
            "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "me", "assistant_tag": "bot"},
        },
    }
    import yaml

    data_dir = tmp_path / "reg"
    data_dir.mkdir()
    (data_dir / "dataset_info.yaml").write_text(yaml.safe_dump(registry))
    for name in ("alp.jsonl", "sg.jsonl"):
        os.replace(tmp_path / name, data_dir / name)
    ds, stats = load("my_alpaca,my_sharegpt", "chat", dataset_dir=str(data_dir))
    assert ds[0]["messages"] == [m("system", "S"), m("user", "Do\nit"), m("assistant", "done")]
    assert ds[1]["messages"] == [m("user", "hi"), m("assistant", "hello")]
    assert stats.formats == {"alpaca": 1, "sharegpt": 1}
    monkeypatch.chdir(data_dir)  # the registry is also found in the working directory
    ds, _ = load("my_sharegpt", "prompt")
    assert ds[0] == {"prompt": [m("user", "hi")], "answer": "x"}


# ---------------------------------------------------------------------------- val split, streaming


def test_split_val_and_load_val(tmp_path, load):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": str(i)} for i in range(20)])
    ds, _ = load(path, "pretrain")
    train, val = split_val(ds, 0.25, seed=0)
    assert len(train) == 15 and len(val) == 5
    assert sorted(list(train["text"]) + list(val["text"])) == sorted(ds["text"])
    train, val = split_val(ds, 3)
    assert len(val) == 3
    with pytest.raises(LmforgeError, match="val_size"):
        split_val(ds, 20)
    vpath = write_jsonl(tmp_path / "v.jsonl", [{"text": "v"}])
    _, val = load_val(ds, "pretrain", val_dataset=vpath, cache_dir=str(tmp_path / "cache"))
    assert val["text"] == ["v"]
    assert load_val(ds, "pretrain")[1] is None


def test_streaming_yields_same_rows(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [chat_row(i) for i in range(4)] + [{"conversations": 1}])
    rows = list(iter_rows_streaming(path, "chat", skip_bad_rows=True))
    assert rows == [expected_chat(i) for i in range(4)]
    assert len(list(iter_rows_streaming(f"{path}#2", "chat", skip_bad_rows=True))) == 2
    with pytest.raises(DataError, match=r"sft\.jsonl:5: "):
        list(iter_rows_streaming(path, "chat"))


def test_large_jsonl_streams_with_small_rss(tmp_path, load):
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "big.jsonl"
    body = "lorem ipsum dolor sit amet " * 18
    with open(path, "w") as f:
        i = 0
        while f.tell() < 50 * 2**20:
            f.write(
                json.dumps(
                    chat_row(i)
                    | {
                        "conversations": [
                            {"role": "user", "content": f"{i} {body}"},
                            {"role": "assistant", "content": body},
                        ]
                    }
                )
                + "\n"
            )
            i += 1
    load(
        write_jsonl(tmp_path / "warm.jsonl", [chat_row(0)]), "chat"
    )  # imports (datasets, pyarrow) are not growth
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    ds, stats = load(str(path), "chat")
    grown = proc.memory_info().rss - before
    assert stats.num_rows == i and len(ds) == i
    assert grown < 200 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB"


# ---------------------------------------------------------------------------- data check


class CharTokenizer:
    """Stand-in tokenizer: one token per character (no chat template → ChatML rendering)."""

    chat_template = None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def test_check_dataset_report(tmp_path):
    rows = [{"text": "x" * 10}, {"text": "y" * 100}, {"text": ""}, {"text": "z" * 40}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    report = check_dataset(
        path, "pretrain", tokenizer=CharTokenizer(), max_length=50, cache_dir=str(tmp_path / "c")
    )
    assert report["num_rows"] == 3 and report["num_bad"] == 1
    assert report["bad_rows"][0].startswith(f"{path}:3: ")
    assert report["formats"] == {"text": 3}
    assert report["lengths"]["max"] == 100 and report["num_over_max_length"] == 1
    assert sum(c for _, _, c in report["lengths"]["histogram"]) == 3
    text = format_report(report)
    assert "rows: 3" in text and "bad: 1" in text and "over max_length 50: 1 rows" in text


def test_check_dataset_preference_uses_longer_side(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "chosen": "g" * 30, "rejected": "b"}])
    report = check_dataset(path, "preference", tokenizer=CharTokenizer(), cache_dir=str(tmp_path / "c"))
    assert report["lengths"]["max"] > 30


def test_json_list_parser_across_chunk_boundaries(tmp_path, monkeypatch):
    from lmforge.data import readers as load_mod

    monkeypatch.setattr(load_mod, "_CHUNK", 7)  # every element straddles several reads
    rows = [{"text": f"row {i} " + "é" * i} for i in range(12)]
    (tmp_path / "l.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    got = list(load_mod.iter_raw(str(tmp_path / "l.json"), "pretrain"))
    assert [r for _, r in got] == rows
    assert [line for line, _ in got] == [2 + 3 * i for i in range(12)]  # indent=1: 3 lines per object


def test_streaming_mixing_and_load_kwargs(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(3)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(2)])
    stream = iter_rows_streaming(
        f"{a},{b}", "pretrain", mix_strategy="interleave_under", cache_dir=str(tmp_path)
    )
    assert [r["text"] for r in stream] == ["a0", "b0", "a1", "b1"]
    assert [r["text"] for r in iter_rows_streaming(f"{a},{b}", "pretrain")] == ["a0", "a1", "a2", "b0", "b1"]


def test_bad_format_and_binary_file_are_one_line_errors(tmp_path, load):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "x"}])
    with pytest.raises(LmforgeError, match="--format 'sharegpt' is not a pretrain format"):
        load(path, "pretrain", fmt="sharegpt")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(LmforgeError, match="not UTF-8"):
        load(str(tmp_path / "bin.jsonl"), "pretrain")
