"""`generate distill` / `generate qa` and the teacher client, against a real `lmforge serve`.

The teacher is a tiny Qwen3 on the shipped tokenizer, trained here for a few seconds to answer two
questions with a `<think>` block and two without; other questions get greedy babble that differs
from question to question, so a row holding another question's answer is caught. The server runs
once for the module with greedy decoding (test_serve checks that a greedy answer does not depend
on what it is batched with), so every run here can be compared byte for byte with the
uninterrupted reference run. Faults come from `fault_proxy.FaultProxy` (429 with Retry-After,
5xx, dropped connections, a hang past `--timeout`, a non-JSON 200), kills from SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fault_proxy import FaultProxy  # noqa: E402

from lmforge.cli import main  # noqa: E402
from lmforge.data.template import EMPTY_THINK  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (question, reasoning, answer): what the teacher learns
CONVS = [
    ("2 + 2?", "two and two", "four."),
    ("why is the sky blue?", "light scatters", "because air scatters blue light most."),
    ("name a fruit", None, "an apple."),
    ("say hi", None, "hi there, nice to meet you."),
]
MAX_TOKENS = 24
NUM_SYNTH = 16


# ---------------------------------------------------------------------------------------------
# teacher, server, input


@pytest.fixture(scope="module", autouse=True)
def _no_home_cache(tmp_path_factory):
    """A run without --cache_dir must not write into the real ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("lmforge_cache")))
        yield


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, one_thread):
    import torch

    from lmforge.data.template import render_chat
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = init_model(tok, preset="tiny", seed=0, max_position_embeddings=512)
    rows = []
    for user, reasoning, answer in CONVS:
        msg = {"role": "assistant", "content": answer}
        if reasoning:
            msg["reasoning_content"] = reasoning
        text = render_chat([{"role": "user", "content": user}, msg])
        rows.append(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]]))
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(120):
        for x in rows:
            model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("teacher") / "model"
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(teacher_dir, tmp_path_factory):
    """Base URL (…/v1) of `lmforge serve` on a free port, greedy, answers of up to MAX_TOKENS."""
    log_path = tmp_path_factory.mktemp("teacher_serve") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = [str(teacher_dir), "--served_model_name", "tiny", "--temperature", "0"]
    argv += ["--max_new_tokens", str(MAX_TOKENS), "--max_batch_size", "8", "--port", "0"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmforge", "serve", *argv], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    url, deadline = None, time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", log_path.read_text())
        if found:
            try:
                if httpx.get(found.group(1)[: -len("/v1")] + "/health", timeout=2).status_code == 200:
                    url = found.group(1)
                    break
            except httpx.TransportError:
                pass
        time.sleep(0.1)  # polling the log / readiness endpoint, not waiting for a result
    if url is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"server did not start:\n{log_path.read_text()[-3000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def input_file(synth_dir, tmp_path_factory):
    """The four trained questions in four formats, then synthetic multi-turn chats (with system)."""
    rows = [
        {"messages": [{"role": "user", "content": CONVS[0][0]}]},
        {"instruction": CONVS[1][0], "input": ""},
        {"conversations": [{"from": "human", "value": CONVS[2][0]}, {"from": "gpt", "value": "a pear."}]},
        {"prompt": CONVS[3][0]},
    ]
    with open(synth_dir / "sft.jsonl", encoding="utf-8") as f:
        rows += [json.loads(line) for _, line in zip(range(NUM_SYNTH), f)]
    path = tmp_path_factory.mktemp("teacher_input") / "questions.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def expected_questions(input_file) -> list[list[dict]]:
    """Each row's question, worked out here: every turn up to the last user turn."""
    out = []
    for line in input_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        convs = row.get("messages") or row.get("conversations")
        if convs is None:
            out.append([{"role": "user", "content": row.get("instruction") or row.get("prompt")}])
            continue
        convs = [
            {
                "role": t.get("role", {"human": "user"}.get(t.get("from"))),
                "content": t.get("content", t.get("value")),
            }
            for t in convs
        ]
        last = max(i for i, t in enumerate(convs) if t["role"] == "user")
        out.append(convs[: last + 1])
    return out


def ask(url: str, messages: list[dict], **params) -> tuple[str, str]:
    """(answer, reasoning) of one greedy request sent straight to the server."""
    body = {"model": "tiny", "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS, **params}
    msg = httpx.post(f"{url}/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]
    return msg["content"].strip(), (msg.get("reasoning_content") or "").strip()


def generate(*argv) -> int:
    return main(["generate", *map(str, argv)])


def distill_argv(url, input_file, output, *extra):
    return [
        "distill",
        "--base_url",
        url,
        "--model",
        "tiny",
        "--input_file",
        input_file,
        "--output_file",
        output,
        "--temperature",
        "0",
        "--max_tokens",
        MAX_TOKENS,
        *extra,
    ]


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def sft_rows(path) -> list[dict]:
    """The rows of a generated file, each checked by lmforge's own SFT reader (no id field needed)."""
    from lmforge.data.formats import to_canonical

    rows = read_rows(path)
    for i, row in enumerate(rows):
        msgs = to_canonical(row, "chat", path=str(path), line=i + 1)["messages"]
        assert msgs[-1]["role"] == "assistant" and msgs[-1]["content"] == row["conversations"][-1]["content"]
    return rows


def totals(output) -> dict:
    return json.loads(Path(f"{output}.stats").read_text())["totals"]


@pytest.fixture(scope="module")
def reference(server, input_file, tmp_path_factory):
    """An uninterrupted answer_only run (cache on): (output path, its bytes, return code)."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "ref.jsonl"
    code = generate(*distill_argv(server, input_file, out, "--cache_dir", tmp / "cache", "--concurrency", 4))
    return out, out.read_bytes(), code


# ---------------------------------------------------------------------------------------------
# distill


def test_distill_answers_every_question_in_order_and_never_pays_twice(server, input_file, reference, capsys):
    out, data, code = reference
    questions = expected_questions(input_file)
    answers = [ask(server, q) for q in questions]
    ok = [i for i, (a, _) in enumerate(answers) if a]
    assert len(ok) >= len(questions) - 2 and len(set(a for a, _ in answers)) > len(questions) // 2
    rows = sft_rows(out)
    assert [r["id"] for r in rows] == ok  # every answered row once, in input order
    for row in rows:
        *question, answer = row["conversations"]
        assert question == questions[row["id"]]  # system prompt and earlier turns kept
        assert answer == {"role": "assistant", "content": answers[row["id"]][0]}  # its own answer
    failed = read_rows(f"{out}.failed") if Path(f"{out}.failed").exists() else []
    assert [f["id"] for f in failed] == [i for i in range(len(questions)) if i not in ok]
    assert code == (1 if failed else 0)
    t = totals(out)
    assert t["teacher"]["requests"] == len(questions) and t["teacher"]["retries"] == 0
    assert t["teacher"]["prompt_tokens"] > 0 and t["teacher"]["completion_tokens"] > 0
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.lock").exists()

    # rerun: everything is there, nothing is asked
    cache = out.parent / "cache"
    assert generate(*distill_argv(server, input_file, out, "--cache_dir", cache)) == code
    assert out.read_bytes() == data and totals(out)["teacher"]["requests"] == len(failed)
    # start over with the same cache: the same bytes, every answer from the cache
    assert generate(*distill_argv(server, input_file, out, "--cache_dir", cache, "--no_resume")) == code
    assert out.read_bytes() == data
    t = totals(out)
    assert t["teacher"]["cache_hits"] == len(ok) and t["teacher"]["requests"] == len(failed)
    assert f"{len(ok)} rows in {out}" in capsys.readouterr().out


def test_reasoning_mode_writes_think_blocks_and_passes_reasoning_effort(server, input_file, tmp_path):
    out = tmp_path / "r.jsonl"
    with FaultProxy(server) as proxy:  # no faults: it only records what was sent
        argv = distill_argv(proxy.url, input_file, out, "--mode", "reasoning", "--reasoning_effort", "high")
        assert generate(*argv, "--max_samples", 4, "--no_cache", "--seed", 7) == 0
    bodies = proxy.bodies()
    assert len(bodies) == 4 == proxy.forwarded
    for body in bodies:
        assert (body["model"], body["reasoning_effort"], body["temperature"]) == ("tiny", "high", 0)
        assert (body["max_tokens"], body["seed"]) == (MAX_TOKENS, 7)
    with_reasoning = 0
    for row, question in zip(sft_rows(out), expected_questions(input_file)):
        answer, reasoning = ask(server, question)
        think = f"<think>\n{reasoning}\n</think>\n\n" if reasoning else EMPTY_THINK
        assert row["conversations"][-1]["content"] == think + answer
        with_reasoning += bool(reasoning)
    assert with_reasoning >= 1  # "2 + 2?" was trained with a think block
    assert totals(out)["no_reasoning"] == 4 - with_reasoning


def test_qa_asks_a_different_question_per_sample_then_answers_it(server, tmp_path):
    from lmforge.teacher.generate import _clean_question, qa_question_messages

    out = tmp_path / "qa.jsonl"
    argv = ["--model", "tiny", "--topic", "fruit", "--num_samples", 5, "--difficulty", "hard"]
    argv += ["--language", "en", "--output_file", out, "--no_cache", "--temperature", "0"]
    argv += ["--max_tokens", MAX_TOKENS, "--concurrency", 3]
    with FaultProxy(server) as proxy:
        code = generate("qa", "--base_url", proxy.url, *argv)
    prompts = [b["messages"][0]["content"] for b in proxy.bodies() if "fruit" in b["messages"][0]["content"]]
    assert len(prompts) == 5 == len(set(prompts)) and all("hard" in p for p in prompts)
    questions = [
        _clean_question(ask(server, qa_question_messages(i, "fruit", "hard", "en"))[0]) for i in range(5)
    ]
    answers = [ask(server, [{"role": "user", "content": q}])[0] if q else "" for q in questions]
    rows = sft_rows(out)
    assert [r["id"] for r in rows] == [i for i in range(5) if answers[i]]
    assert code == (0 if len(rows) == 5 else 1) and proxy.received == 5 + sum(bool(q) for q in questions)
    for row in rows:
        user = {"role": "user", "content": questions[row["id"]]}
        assert row["conversations"] == [user, {"role": "assistant", "content": answers[row["id"]]}]


# ---------------------------------------------------------------------------------------------
# faults


def test_faults_are_retried_and_every_row_appears_once(server, input_file, reference, tmp_path):
    _, data, code = reference
    faults = {1: "429", 3: "500", 4: "drop", 6: "hang", 8: "garbage", 9: "503"}
    out = tmp_path / "f.jsonl"
    with FaultProxy(server, faults, retry_after=0.05, hang_seconds=30) as proxy:
        argv = distill_argv(proxy.url, input_file, out, "--no_cache", "--concurrency", 3, "--timeout", 4)
        assert generate(*argv, "--backoff_base", 0.05, "--backoff_max", 0.2, "--max_retries", 8) == code
    assert out.read_bytes() == data  # the same rows, once each, in order, as without faults
    assert sorted(proxy.faulted) == sorted(faults.items())
    t = totals(out)["teacher"]
    n = len(expected_questions(input_file))
    assert t["requests"] == proxy.received and t["retries"] == proxy.received - n >= len(faults)
    assert proxy.forwarded == proxy.received - len(faults) >= n


def test_a_row_failing_every_retry_is_listed_then_filled_in_on_rerun(
    server, input_file, reference, tmp_path, capsys
):
    ref_out, data, _ = reference
    target = CONVS[0][0].encode()  # row 0 ("2 + 2?") always gets HTTP 500
    out = tmp_path / "g.jsonl"
    with FaultProxy(server, lambda seq, path, body: "500" if target in body else None) as proxy:
        argv = distill_argv(
            proxy.url, input_file, out, "--no_cache", "--max_retries", 2, "--backoff_base", 0.01
        )
        assert generate(*argv) == 1
    assert sum(target in body for _, _, body in proxy.requests) == 3  # 1 + 2 retries
    err = [ln for ln in capsys.readouterr().err.splitlines() if "rows failed" in ln]
    assert len(err) == 1 and f"{out}.failed" in err[0] and "HTTP 500" in err[0]
    failed = read_rows(f"{out}.failed")
    assert failed[0] == {"id": 0, "error": "HTTP 500: injected fault 500", "attempts": 3}
    ref_rows = read_rows(ref_out)
    assert read_rows(out) == [r for r in ref_rows if r["id"] != 0]
    # the rerun (straight to the server) asks for row 0 only and puts it back in its place
    assert generate(*distill_argv(server, input_file, out, "--no_cache")) == (1 if len(failed) > 1 else 0)
    assert out.read_bytes() == data
    t = totals(out)
    assert (t["new"], t["teacher"]["requests"]) == (1, len(failed))
    assert not Path(f"{out}.partial").exists()


def test_wrong_model_stops_at_once_with_one_line(server, input_file, tmp_path, capsys):
    out = tmp_path / "w.jsonl"
    with FaultProxy(server) as proxy:
        argv = distill_argv(proxy.url, input_file, out, "--no_cache", "--concurrency", 2)
        argv[argv.index("tiny")] = "no-such-model"
        assert generate(*argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lmforge: error:")]
    assert len(lines) == 1 and "HTTP 404" in lines[0] and "no-such-model" in lines[0]
    assert proxy.received <= 2  # not one request per row: the first 404 stops the rest


def test_resume_refuses_other_settings_and_reasks_changed_questions(
    reference, server, input_file, tmp_path, capsys
):
    ref_out, data, code = reference
    out = tmp_path / "s.jsonl"
    out.write_bytes(data)
    Path(f"{out}.stats").write_bytes(Path(f"{ref_out}.stats").read_bytes())
    assert generate(*distill_argv(server, input_file, out, "--mode", "reasoning", "--no_cache")) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--mode 'answer_only', now 'reasoning'" in line and "--no_resume" in line
    assert out.read_bytes() == data
    # the input changed under row 3: only that row is asked again, and it answers the new question
    lines = input_file.read_text(encoding="utf-8").splitlines()
    lines[3] = json.dumps({"prompt": "name a fruit"})
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert generate(*distill_argv(server, changed, out, "--cache_dir", ref_out.parent / "cache")) == code
    rows, ref_rows = read_rows(out), read_rows(ref_out)
    assert [r for r in rows if r["id"] != 3] == [r for r in ref_rows if r["id"] != 3]
    question = [{"role": "user", "content": "name a fruit"}]
    row3 = next(r for r in rows if r["id"] == 3)
    assert row3["conversations"] == [*question, {"role": "assistant", "content": ask(server, question)[0]}]
    assert totals(out)["new"] == 1


# ---------------------------------------------------------------------------------------------
# kill -9


def _subprocess_argv(url, input_file, out, *extra) -> list[str]:
    argv = distill_argv(url, input_file, out, "--no_cache", *extra)
    return [sys.executable, "-m", "lmforge", "generate", *map(str, argv)]


def _env(**extra) -> dict:
    return {**os.environ, "LMFORGE_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", **extra}


def test_kill_9_mid_line_twice_then_rerun_gives_the_uninterrupted_bytes(
    server, input_file, reference, tmp_path
):
    _, data, code = reference
    out = tmp_path / "k.jsonl"
    argv = _subprocess_argv(server, input_file, out, "--concurrency", 2)
    for kill_at in (6, 4):  # each run dies while writing its kill_at-th row
        killed = subprocess.run(
            argv, env=_env(LMFORGE_FAULT_KILL_AFTER_ROWS=str(kill_at)), capture_output=True
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        journal = Path(f"{out}.partial").read_bytes()
        assert journal and not journal.endswith(b"\n")  # a torn last line
        ids = [r["id"] for r in read_rows(out)]
        assert ids == list(range(len(ids)))  # OUTPUT is always an in-order prefix
    again = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == code, again.stderr[-2000:]
    assert out.read_bytes() == data
    t = totals(out)
    n = len(expected_questions(input_file))
    assert (t["resumed"], t["new"] + t["failed"]) == (5 + 3, n - 8)  # nothing asked twice
    assert t["teacher"]["requests"] == n - 8
    assert not any(Path(f"{out}.{s}").exists() for s in ("partial", "lock", "tmp"))


def test_external_kill_9_then_rerun_gives_the_uninterrupted_bytes(server, input_file, reference, tmp_path):
    _, data, code = reference
    out = tmp_path / "e.jsonl"
    # one request at a time, 0.2 s apart: the run lasts seconds, so the kill lands mid-run
    argv = _subprocess_argv(server, input_file, out, "--concurrency", 1, "--rate_limit_delay", 0.2)
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.01)  # polling the output file
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    resumed = out.read_bytes().count(b"\n")
    again = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == code, again.stderr[-2000:]
    assert out.read_bytes() == data
    assert totals(out)["resumed"] >= resumed >= 3


# ---------------------------------------------------------------------------------------------
# pieces without a server


def test_questions_from_every_chat_format_and_bad_rows(tmp_path):
    from lmforge.errors import LmforgeError
    from lmforge.teacher.generate import _plan, iter_questions

    rows = [
        {
            "conversations": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "d"},
            ]
        },
        {"id": "x7", "messages": [{"role": "user", "content": "m"}]},
        {"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}], "system": "T"},
        {"instruction": "i", "input": "j", "history": [["p", "q"]]},
        {"prompt": "plain"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    got = [(i, m) for _, i, m in iter_questions(str(path), None)]
    u, a = (lambda t: {"role": "user", "content": t}), (lambda t: {"role": "assistant", "content": t})
    assert got == [
        (0, [{"role": "system", "content": "S"}, u("a"), a("b"), u("c")]),
        ("x7", [u("m")]),
        (2, [{"role": "system", "content": "T"}, u("h")]),
        (3, [u("p"), a("q"), u("i\nj")]),
        (4, [u("plain")]),
    ]
    assert [i for _, i, _ in iter_questions(str(path), 2)] == [0, "x7"]
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"prompt": "a", "id": 1}\n{"prompt": "b"}\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=rf"{re.escape(str(dup))}:2: \"id\" must be unique"):
        _plan(str(dup), None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"foo": 1}\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=rf"{re.escape(str(bad))}:2: \"row\" has no question"):
        _plan(str(bad), None)


def test_reasoning_split_cache_key_and_rate_limiter():
    from lmforge.teacher.cache import request_key
    from lmforge.teacher.client import RateLimiter, split_reasoning

    assert split_reasoning({"content": "A", "reasoning_content": " R "}) == ("A", "R")
    assert split_reasoning({"content": "A", "reasoning": "R"}) == ("A", "R")  # OpenRouter
    assert split_reasoning({"content": "<think>\nR\n</think>\n\nA"}) == ("A", "R")
    assert split_reasoning({"content": "R</think>A"}) == ("R</think>A", None)  # no opening tag: text
    assert split_reasoning({"content": "x <think>y</think> z"}) == ("x <think>y</think> z", None)
    assert split_reasoning({"content": None}) == ("", None)

    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 0.7}
    assert request_key(body) == request_key(dict(reversed(body.items())))  # key order is no matter
    assert request_key(body) == request_key({**body, "stream": True})
    for change in ({"temperature": 0.8}, {"model": "n"}, {"seed": 1}, {"reasoning_effort": "high"}):
        assert request_key({**body, **change}) != request_key(body)

    now = [100.0]
    waits = []

    class FakeEvent:
        def wait(self, seconds):
            waits.append(round(seconds, 6))

    limiter = RateLimiter(0.5, clock=lambda: now[0])
    for _ in range(3):
        limiter.wait(FakeEvent())
    now[0] += 2.0  # idle for a while: the next request may start at once
    limiter.wait(FakeEvent())
    assert waits == [0.5, 1.0]


def test_client_order_callbacks_400_and_cache(server, tmp_path):
    from lmforge.teacher import TeacherClient, TeacherConfig

    requests = [{"messages": [{"role": "user", "content": c[0]}], "temperature": 0} for c in CONVS]
    requests.append({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})  # a bad request
    seen = []
    cfg = TeacherConfig(base_url=server, model="tiny", concurrency=3, cache_dir=str(tmp_path / "c"))
    with TeacherClient(cfg) as client:
        results = client.complete_many(requests, on_result=lambda i, r: seen.append(i))
        assert sorted(seen) == list(range(5))
        for req, res in zip(requests[:4], results):
            assert res.ok and (res.content, res.reasoning or "") == ask(server, req["messages"])
        bad = results[4]
        assert (bad.ok, bad.attempts, bad.status) == (False, 1, 400) and "max_tokens" in bad.error
        assert (client.stats.requests, client.stats.retries, client.stats.failures) == (5, 0, 1)
    with TeacherClient(cfg) as client:  # a new client, the same cache folder
        again = client.complete_many(requests[:4])
        assert [r.content for r in again] == [r.content for r in results[:4]]
        assert all(r.cached and r.usage == {"prompt_tokens": 0, "completion_tokens": 0} for r in again)
        assert (client.stats.requests, client.stats.cache_hits) == (0, 4)


def test_minimind_script_flags_parse_with_their_defaults():
    """The command lines of MiniMind's generate_distill_data_from_api.py / generate_qa_pairs_from_api.py."""
    from lmforge.config.loader import resolve
    from lmforge.teacher.args import (
        QA_DEFAULTS,
        DistillArgs,
        GenerateArgs,
        QAArgs,
        TeacherArgs,
        normalize_argv,
    )

    distill = "--api_key K --model deepseek/deepseek-r1 --input_file in.jsonl --output_file o.jsonl --mode "
    distill += "reasoning --reasoning_effort high --temperature 0.8 --max_tokens 4096 --rate_limit_delay 1.0 "
    distill += "--max_samples 50 --no_resume"
    cfg = resolve([DistillArgs, GenerateArgs, TeacherArgs], normalize_argv(distill.split()))
    assert (cfg["model"], cfg["mode"], cfg["reasoning_effort"], cfg["max_tokens"]) == (
        "deepseek/deepseek-r1",
        "reasoning",
        "high",
        4096,
    )
    assert (cfg["rate_limit_delay"], cfg["max_samples"], cfg["no_resume"], cfg["api_key"]) == (
        1.0,
        50,
        True,
        "K",
    )
    assert cfg["base_url"] == "https://openrouter.ai/api/v1"  # MiniMind's default
    qa = "--teacher_model m --topic Python --num_samples 10 --output_file q.jsonl --language en"
    cfg = resolve([QAArgs, GenerateArgs, TeacherArgs], normalize_argv(qa.split()), defaults=QA_DEFAULTS)
    assert (cfg["model"], cfg["topic"], cfg["num_samples"], cfg["language"]) == ("m", "Python", 10, "en")
    assert (cfg["difficulty"], cfg["mode"], cfg["temperature"]) == ("medium", "answer_only", 0.8)
    assert resolve([DistillArgs, GenerateArgs, TeacherArgs], [])["temperature"] == 0.7


def test_qa_prompts_differ_per_sample_in_both_languages():
    from lmforge.teacher.generate import qa_question_messages

    for lang, level in (("zh", "简单"), ("en", "easy")):
        prompts = [qa_question_messages(i, "光合作用", "easy", lang)[0]["content"] for i in range(30)]
        assert len(set(prompts)) == 30 and all("光合作用" in p and level in p for p in prompts)
