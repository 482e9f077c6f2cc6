"""`lmforge infer` (batch file inference) and `lmforge chat` (one-shot and REPL) on a tiny trained model."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import CONVS, build_trained  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.infer.args import GenerationArgs  # noqa: E402
from lmforge.infer.batch import InferArgs, default_output, run_infer  # noqa: E402
from lmforge.infer.chat import ChatArgs, run_chat  # noqa: E402
from lmforge.infer.engine import Engine  # noqa: E402

GREEDY = GenerationArgs(temperature=0, max_new_tokens=64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(*build_trained(tmp_path_factory.mktemp("infer")))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_infer_jsonl_in_input_order(engine, tmp_path):
    rows = [
        {"conversations": [{"role": "user", "content": "fox"}, {"role": "assistant", "content": "ref fox"}]},
        {"prompt": "hi"},
        {"instruction": "fox"},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"conversations": [{"from": "human", "value": "fox"}], "answer": "gold"},
        {"text": "hello world"},
    ]
    src = tmp_path / "data.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    out = run_infer(InferArgs(input=str(src), batch_size=2), GREEDY, engine=engine)
    assert out == str(tmp_path / "data.pred.jsonl") == default_output(str(src))
    got = read_jsonl(out)
    answers = {u: a for u, _, a in CONVS}
    assert [r["id"] for r in got] == list(range(len(rows)))
    assert [r["prompt"] for r in got] == ["fox", "hi", "fox", "hi", "fox", "hello world"]
    assert [r["prediction"] for r in got[:5]] == [answers[p] for p in ("fox", "hi", "fox", "hi", "fox")]
    assert got[0]["reference"] == "ref fox" and got[4]["reference"] == "gold" and "reference" not in got[1]
    assert got[0]["reasoning_content"] == CONVS[1][1]
    assert got[5]["prediction"] == engine.complete("hello world", GREEDY).text
    for r in got:
        assert r["finish_reason"] in ("stop", "length") and r["usage"]["completion_tokens"] > 0
    # no temp file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "data.pred.jsonl"]


def test_infer_csv_mdl_toolkit_columns(engine, tmp_path):
    src = tmp_path / "q.csv"
    src.write_text("system_prompt,user_prompt,prediction\n,fox,gold fox\n,hi,\n", encoding="utf-8")
    out = run_infer(InferArgs(input=str(src), output=str(tmp_path / "o" / "p.jsonl")), GREEDY, engine=engine)
    got = read_jsonl(out)
    assert [(r["id"], r["prompt"], r["prediction"]) for r in got] == [
        (0, "fox", CONVS[1][2]),
        (1, "hi", CONVS[0][2]),
    ]
    assert got[0]["reference"] == "gold fox" and "reference" not in got[1]


def test_infer_bad_row_names_file_and_line(engine, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "hi"}\n{"question": "x"}\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"bad.jsonl:2: \"row\" expected one of") as e:
        run_infer(InferArgs(input=str(src)), GREEDY, engine=engine)
    assert "\n" not in str(e.value)
    src.write_text('{"prompt": "hi"}\nnot json\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"bad.jsonl:2: \"line\" must be one JSON object"):
        run_infer(InferArgs(input=str(src)), GREEDY, engine=engine)
    src.write_text('{"messages": [{"role": "user", "content": 3}]}\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"bad.jsonl:1: \"messages\[0\]\.content\" must be a string"):
        run_infer(InferArgs(input=str(src)), GREEDY, engine=engine)
    assert not (tmp_path / "bad.pred.jsonl").exists()


def test_infer_max_length_error_names_row(engine, tmp_path):
    src = tmp_path / "long.jsonl"
    src.write_text('{"prompt": "hi"}\n{"prompt": "%s"}\n' % ("fox " * 40), encoding="utf-8")
    with pytest.raises(
        LmforgeError, match=r"long.jsonl:2: row 1 has a \d+-token prompt, more than --max_length 32"
    ):
        run_infer(InferArgs(input=str(src), max_length=32), GREEDY, engine=engine)


def test_infer_killed_run_leaves_no_output(engine, tmp_path, monkeypatch):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"prompt": "hi"}) + "\n" for _ in range(40)), encoding="utf-8")
    out = tmp_path / "d.pred.jsonl"
    out.write_text("old complete result\n")
    calls = []

    def dying(encoded, gen, batch_size=8):
        if calls:
            raise KeyboardInterrupt  # killed during the second wave, after the first was written
        calls.append(1)
        return Engine.generate_ids(engine, encoded, gen, batch_size)

    monkeypatch.setattr(engine, "generate_ids", dying)
    with pytest.raises(KeyboardInterrupt):
        run_infer(
            InferArgs(input=str(src), batch_size=1),
            GenerationArgs(temperature=0, max_new_tokens=4),
            engine=engine,
        )
    assert calls and out.read_text() == "old complete result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "d.pred.jsonl"]


def test_chat_one_shot_prompt(engine, capsys):
    assert run_chat(ChatArgs(prompt="hi"), GREEDY, engine=engine) == 0
    out = capsys.readouterr().out
    assert out == f"{CONVS[0][1]}\n\n{CONVS[0][2]}\n"  # thinking shown (plain, not a tty), then the answer
    hidden = GenerationArgs(temperature=0, max_new_tokens=64, show_thinking=False)
    run_chat(ChatArgs(prompt="fox", stream=False, show_speed=True), hidden, engine=engine)
    captured = capsys.readouterr()
    assert captured.out == CONVS[1][2] + "\n" and "tokens/s" in captured.err


def test_chat_repl_reset_system_and_eof(engine, monkeypatch, capsys):
    seen = []
    real_stream = engine.stream

    def spy(messages, gen, tools=None):
        seen.append(messages)
        return real_stream(messages, gen, tools)

    monkeypatch.setattr(engine, "stream", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\nfox\n/reset\nhi\n/system be brief\n/bogus\nfox\n"))
    gen = GenerationArgs(temperature=0, max_new_tokens=64, show_thinking=False)
    assert run_chat(ChatArgs(historys=2), gen, engine=engine) == 0  # ends at EOF
    out = capsys.readouterr().out
    assert [len(m) for m in seen] == [1, 3, 1, 2]
    # the history holds the answer without its thinking
    assert seen[1][1] == {"role": "assistant", "content": CONVS[0][2]}
    assert seen[3][0] == {"role": "system", "content": "be brief"}
    assert out.startswith(CONVS[0][2] + "\n") and "[unknown command /bogus]" in out
    assert out.split("[history cleared]\n")[1].startswith(CONVS[0][2] + "\n")  # fresh start: same answer


def test_chat_repl_history_zero_and_exit(engine, monkeypatch):
    calls = []
    real_stream = engine.stream

    def spy(messages, gen, tools=None):
        calls.append(messages)
        return real_stream(messages, gen, tools)

    monkeypatch.setattr(engine, "stream", spy)
    stdin, out = io.StringIO("hi\nfox\n/exit\nhi\n"), io.StringIO()
    assert run_chat(ChatArgs(), GREEDY, engine=engine, stdin=stdin, stdout=out) == 0
    assert [len(m) for m in calls] == [1, 1]  # --historys 0 (MiniMind default): no history; /exit stops
    assert CONVS[1][2] in out.getvalue()
