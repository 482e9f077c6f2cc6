"""`train distill-api` against a real teacher: `lmforge serve` with a tiny random model in a subprocess,
behind tests/fault_proxy.py, which counts the requests that reach the server and injects failures.

The teacher samples (temperature 1), so an answer asked twice would differ: a cached answer is the
only way the training rows can equal what the cache holds. Checked: the tokens under the labels are
exactly the teacher's answers (+ <|im_end|>) and everything before them is the question rendered by
the student's template; a run of many epochs sends one request per distinct prompt and a second run
none; the student learns the answers; reasoning goes inside <think>; failures after retries stop
the run naming teacher_failures.jsonl, or are skipped with --skip_failed_teacher.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fault_proxy import FaultProxy  # noqa: E402
from test_serve import start_server, stop_server  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.pipeline import run_train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [
    "what is two plus three?",
    "name a colour",
    "tell me about rivers",
    "how are you today?",
    "count to five",
    "what is the capital of france?",
    "say hello",
    "write a short poem",
]
SYSTEM = "you are terse"
TEACHER = "tiny-teacher"


def _chat_file(path: Path) -> Path:
    """MiniMind conversations; the dataset's own answers must never reach the training rows."""
    with open(path, "w", encoding="utf-8") as f:
        for i, q in enumerate(QUESTIONS):
            conv = [{"role": "user", "content": q}, {"role": "assistant", "content": f"dataset answer {i}"}]
            if i == 0:
                conv.insert(0, {"role": "system", "content": SYSTEM})
            if i == 1:  # a multi-turn row: the question is everything up to the last user turn
                conv += [
                    {"role": "user", "content": "and another one?"},
                    {"role": "assistant", "content": "no"},
                ]
            f.write(json.dumps({"conversations": conv}) + "\n")
    return path


# At temperature 1 a random model gives an empty answer about once in 300 (measured: 12 of 4000):
# it opens with <|im_end|> or a think tag, or samples only ids past the tokenizer's 2289 (the
# model's vocabulary is padded), which decode to nothing. distill-api rightly refuses an empty
# answer; the teacher here never samples those ids, so no test depends on that luck.
NEVER_SAMPLED = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
)


def _save_model(folder: Path, seed: int, teacher: bool = False) -> Path:
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = init_model(tok, preset="tiny", seed=seed)
    if teacher:
        # tied embeddings: one hidden dimension that every token embeds as 1 stays positive through
        # the (near-zero) random layers, so the logit of a token whose entry there is -10 sits ~80
        # below the others; the other tokens all gain the same amount, their distribution unchanged
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            emb[:, 0] = 1.0
            emb[tok.convert_tokens_to_ids(list(NEVER_SAMPLED)), 0] = -10.0
            emb[len(tok) :, 0] = -10.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill_api")
    teacher = _save_model(tmp / "teacher", seed=1, teacher=True)
    student = _save_model(tmp / "student", seed=2)
    argv = [str(teacher), "--served_model_name", TEACHER, "--max_new_tokens", "16"]
    proc, url = start_server(argv, tmp / "serve.log")
    yield {"tmp": tmp, "url": f"{url}/v1", "student": student, "data": _chat_file(tmp / "chat.jsonl")}
    stop_server(proc)


def _argv(setup, out: Path, base_url: str, cache: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        str(setup["data"]),
        "--model_name_or_path",
        str(setup["student"]),
        "--output_dir",
        str(out),
        "--base_url",
        base_url,
        "--teacher_model",
        TEACHER,
        "--api_key",
        "sk-never-written",
        "--api_temperature",
        "1.0",
        "--api_max_tokens",
        "16",
        "--teacher_cache_dir",
        str(cache),
        "--max_length",
        "96",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--plot",
        "false",
        *extra,
    ]


def _questions(setup) -> list[list[dict]]:
    """The dataset's questions as the stage cuts them (system prompt kept, up to the last user turn)."""
    from lmforge.data.load import load_rows
    from lmforge.training.distill_api import question_of

    rows, _ = load_rows(str(setup["data"]), "chat")
    return [question_of(m, i) for i, m in enumerate(rows["messages"])]


def _cached_answers(questions, base_url: str, cache: Path) -> list:
    """The teacher's answers as the cache holds them (the caller checks nothing was sent)."""
    from lmforge.teacher.client import TeacherClient, TeacherConfig
    from lmforge.training.distill_api import build_request

    opts = {"api_temperature": 1.0, "api_max_tokens": 16}
    requests = [build_request(q, None, opts) for q in questions]
    with TeacherClient(TeacherConfig(base_url=base_url, model=TEACHER, cache_dir=str(cache))) as client:
        results = client.complete_many(requests)
    assert all(r.ok and r.cached for r in results)
    return results


def _label_accuracy(model, rows) -> float:
    """Fraction of labelled tokens the model predicts greedily (teacher forcing)."""
    hits = total = 0
    model.eval()
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            pred = model(input_ids=ids).logits[0, :-1].argmax(-1)
            mask = labels != -100
            hits += int((pred[mask] == labels[mask]).sum())
            total += int(mask.sum())
    return hits / total


def test_trains_on_cached_teacher_answers_and_never_pays_twice(setup):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.data.convert import load_converted
    from lmforge.data.template import render_chat

    tmp, cache = setup["tmp"], setup["tmp"] / "cache_main"
    with FaultProxy(setup["url"]) as proxy:
        run = run_train(
            "distill-api",
            _argv(setup, tmp / "run", proxy.url, cache, "--tokenized_path", str(tmp / "tok"))
            + ["--epochs", "30", "--batch_size", "2", "--learning_rate", "5e-3", "--seed", "0"],
        )
        # 30 epochs over 8 distinct prompts: each asked exactly once
        assert proxy.received == proxy.forwarded == len(QUESTIONS)
        questions = _questions(setup)
        answers = _cached_answers(questions, proxy.url, cache)
        assert proxy.forwarded == len(QUESTIONS)

        tok = AutoTokenizer.from_pretrained(run)
        train, _, _ = load_converted(str(tmp / "tok"))
        assert len(train) == len(QUESTIONS)
        for row, question, answer in zip(train, questions, answers):
            ids, labels = row["input_ids"], row["labels"]
            marked = [i for i, x in enumerate(labels) if x != -100]
            # one labelled turn, even in row 1, whose question holds an earlier assistant turn
            assert marked == list(range(marked[0], marked[-1] + 1))
            assert [ids[i] for i in marked] == [labels[i] for i in marked]
            assert tok.decode([ids[i] for i in marked]) == answer.content + "<|im_end|>"
            # nothing of the question is labelled: all of it precedes the answer, in the student's template
            prompt = tok.decode(ids[: marked[0]])
            assert prompt == render_chat(question, add_generation_prompt=True)
            assert tok.decode(ids) == prompt + answer.content + "<|im_end|>\n"  # no dataset answer after it
        assert questions[0][0]["content"] == SYSTEM and len(questions[1]) == 3

        # the student learnt the teacher's answers: loss falls, greedy next-token accuracy rises
        losses = [
            r["loss"]
            for r in map(json.loads, Path(run, "metrics.jsonl").read_text().splitlines())
            if "loss" in r
        ]
        before = _label_accuracy(AutoModelForCausalLM.from_pretrained(setup["student"]), train)
        after = _label_accuracy(AutoModelForCausalLM.from_pretrained(run), train)
        print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; label accuracy {before:.3f} -> {after:.3f}")
        assert losses[-1] < 0.25 * losses[0]
        assert after > 0.8 and after - before > 0.5

        # a second run (no tokenised cache) with the same answer cache sends nothing
        run2 = run_train("distill-api", _argv(setup, tmp / "run2", proxy.url, cache, "--max_steps", "1"))
        assert proxy.received == proxy.forwarded == len(QUESTIONS)
    card = Path(run2, "README.md").read_text()
    assert f"| teacher_cache_hits | {len(QUESTIONS)} |" in card and "| teacher_requests | 0 |" in card
    assert f"| teacher_requests | {len(QUESTIONS)} |" in Path(run, "README.md").read_text()
    for folder in (run, run2, tmp / "tok"):  # the API key is never written to disk
        for f in Path(folder).rglob("*"):
            if f.is_file() and f.suffix in (".yaml", ".json", ".md", ".jsonl"):
                assert "sk-never-written" not in f.read_text(errors="ignore"), f


def test_tokenised_cache_follows_the_teacher_flags(setup, tokenizer):
    """A different teacher or temperature makes new rows; the key and fetch knobs do not."""
    from lmforge.data.convert import fingerprint
    from lmforge.pipeline import resolve_train_config, stage_option_keys

    def key(*extra):
        module, cfg = resolve_train_config("distill-api", ["--dataset", str(setup["data"]), *extra])
        meta = fingerprint(cfg, tokenizer, "distill-api", "chat", stage_option_keys(module))
        assert "sk-x" not in json.dumps(meta, default=str)
        return meta["key"]

    base = key("--teacher_model", "a")
    assert key("--teacher_model", "b") != base
    assert key("--teacher_model", "a", "--api_temperature", "0.2") != base
    assert key("--teacher_model", "a", "--distill_mode", "reasoning") != base
    assert (
        key("--teacher_model", "a", "--api_key", "sk-x", "--concurrency", "2", "--max_retries", "1") == base
    )


class _ReasoningTeacher(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose answers carry reasoning_content (the tiny model has none)."""

    calls = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        question = body["messages"][-1]["content"]
        message = {
            "role": "assistant",
            "content": f"answer to {question}",
            "reasoning_content": f"why {question}",
        }
        out = json.dumps(
            {
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def _prepare(setup, base_url: str, cache: Path, *extra: str):
    """The stage's training features for `extra` flags (no model, no training)."""
    from lmforge.models.tokenizer import load_tokenizer
    from lmforge.pipeline import StageContext, prepare_datasets, resolve_train_config

    module, cfg = resolve_train_config(
        "distill-api", _argv(setup, setup["tmp"] / "prep", base_url, cache, *extra)
    )
    ctx = StageContext(stage="distill-api", cfg=cfg, run_dir=str(setup["tmp"] / "prep"))
    ctx.tokenizer = load_tokenizer()
    train, _ = prepare_datasets(ctx, module)
    return ctx, train


def test_reasoning_mode_puts_the_teacher_reasoning_in_think(setup):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReasoningTeacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url, cache = f"http://127.0.0.1:{server.server_address[1]}/v1", setup["tmp"] / "cache_reasoning"
    try:
        ctx, train = _prepare(setup, url, cache, "--distill_mode", "reasoning")
        assert _ReasoningTeacher.calls == len(QUESTIONS)
        for row, question in zip(train, _questions(setup)):
            asked = question[-1]["content"]
            labelled = ctx.tokenizer.decode([x for x in row["labels"] if x != -100])
            assert labelled == f"<think>\nwhy {asked}\n</think>\n\nanswer to {asked}<|im_end|>"
        # text_distill drops the reasoning; same requests, so the cache answers them all
        ctx, train = _prepare(setup, url, cache, "--distill_mode", "text_distill")
        assert _ReasoningTeacher.calls == len(QUESTIONS)
        assert ctx.stats["teacher_cache_hits"] == len(QUESTIONS)
        labelled = ctx.tokenizer.decode([x for x in train[0]["labels"] if x != -100])
        assert labelled == f"answer to {QUESTIONS[0]}<|im_end|>"
    finally:
        server.shutdown()
        server.server_close()


DOOMED = (QUESTIONS[0], QUESTIONS[2])  # the teacher never answers these (HTTP 429 on every attempt)


def _fail_doomed(seq: int, path: str, body: bytes) -> str | None:
    return "429" if json.loads(body)["messages"][-1]["content"] in DOOMED else None


def test_failed_prompts_stop_the_run_or_are_skipped(setup):
    from lmforge.data.convert import load_converted

    tmp, cache = setup["tmp"], setup["tmp"] / "cache_faults"
    fetch = ["--max_retries", "1", "--max_steps", "2", "--batch_size", "2"]  # two attempts per prompt
    with FaultProxy(setup["url"], faults=_fail_doomed, retry_after=0) as proxy:
        with pytest.raises(LmforgeError) as err:
            run_train("distill-api", _argv(setup, tmp / "fail", proxy.url, cache, *fetch))
        assert len(proxy.faulted) == 4 and proxy.forwarded == len(QUESTIONS) - 2
    message = str(err.value)
    failures_file = tmp / "fail" / "teacher_failures.jsonl"
    assert "\n" not in message and str(failures_file) in message and "2 of 8" in message
    failed = [json.loads(line) for line in failures_file.read_text().splitlines()]
    assert sorted((f["row"], f["question"]) for f in failed) == [(0, QUESTIONS[0]), (2, QUESTIONS[2])]
    assert all("429" in f["error"] for f in failed)

    # the answered prompts are cached: only the two failures are asked again (and fail again)
    with FaultProxy(setup["url"], faults=_fail_doomed, retry_after=0) as proxy:
        run = run_train(
            "distill-api",
            _argv(setup, tmp / "skip", proxy.url, cache, *fetch, "--skip_failed_teacher", "true")
            + ["--tokenized_path", str(tmp / "tok_skip")],
        )
        assert proxy.received == len(proxy.faulted) == 4 and proxy.forwarded == 0
    train, _, _ = load_converted(str(tmp / "tok_skip"))
    assert len(train) == len(QUESTIONS) - 2
    assert "| teacher_failed_rows | 2 |" in Path(run, "README.md").read_text()
    skipped = [
        json.loads(line)["row"] for line in Path(run, "teacher_failures.jsonl").read_text().splitlines()
    ]
    assert sorted(skipped) == [0, 2]


def test_two_process_ddp_asks_the_teacher_once(setup):
    """Under torchrun only rank 0 talks to the teacher; the other rank gets the answers broadcast."""
    import os
    import subprocess
    import sys

    tmp = setup["tmp"]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env.update(NPROC_PER_NODE="2", OMP_NUM_THREADS="1")
    with FaultProxy(setup["url"]) as proxy:
        argv = _argv(setup, tmp / "ddp", proxy.url, tmp / "cache_ddp", "--max_steps", "2", "--device", "cpu")
        proc = subprocess.run(
            [sys.executable, "-m", "lmforge", "train", "distill-api", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proxy.received == proxy.forwarded == len(QUESTIONS)
    assert (proc.stdout + proc.stderr).count("teacher usage:") == 1
    assert json.loads(Path(tmp / "ddp", "lmforge_finished.json").read_text())["global_step"] == 2
