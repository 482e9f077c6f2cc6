"""`lmforge eval`: multiple-choice accuracy of scripted models on the bundled sample benchmarks
(an oracle scores exactly 1.0, a uniform model exactly the share of "A" answers, by tie-breaking),
perplexity of a model with a known next-token probability, hand-computed generation metrics,
one-line errors, and the --eval_url client against a stub server and against `lmforge serve`."""

import csv
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import torch

from lmforge.cli import main
from lmforge.evaluate.bench import samples_dir

# What each sample file says, read here with the csv module (not lmforge's reader).
LAYOUT_FILES = {
    "ceval": ("val", "*_val.csv", True),
    "cmmlu": ("test", "*.csv", True),
    "mmlu": ("test", "*_test.csv", False),
}


def sample_answers(benchmark):
    """{subject: [answer letters]} and {question text: answer} of the bundled sample."""
    split, pattern, header = LAYOUT_FILES[benchmark]
    per_subject, by_question = {}, {}
    for path in sorted((samples_dir() / benchmark / split).glob(pattern)):
        rows = list(csv.reader(path.open(encoding="utf-8")))[1 if header else 0 :]
        cells = [r[1:] if header else r for r in rows]
        subject = path.stem.removesuffix(f"_{split}")
        per_subject[subject] = [c[5] for c in cells]
        by_question.update({c[0]: c[5] for c in cells})
    return per_subject, by_question


@pytest.fixture(scope="module")
def engine(tokenizer):
    from lmforge.infer.engine import Engine
    from lmforge.models.scratch import init_model

    return Engine(init_model(tokenizer, preset="tiny", seed=0), tokenizer)


def scripted(engine, logits_fn):
    """Replace the model's forward: logits_fn(ids (T,) of one row) → (T, V) logits."""

    def forward(input_ids=None, attention_mask=None, **kwargs):
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            rows.append(logits_fn(ids[mask.bool()], ids.shape[0]))
        return SimpleNamespace(logits=torch.stack(rows))

    engine.model.forward = forward
    return engine


def oracle_logits(tokenizer, answers, vocab):
    """All mass on the answer letter (with and without a leading space) of the last question seen."""
    letter_ids = {L: {tokenizer.convert_tokens_to_ids(t) for t in (L, "Ġ" + L)} for L in "ABCD"}

    def fn(ids, width):
        text = tokenizer.decode(ids)
        question = max(answers, key=lambda q: text.rfind(q))
        out = torch.zeros(width, vocab)
        out[:, sorted(letter_ids[answers[question]])] = 20.0
        return out

    return fn


@pytest.fixture
def restore_forward(engine):
    original = engine.model.forward
    yield
    engine.model.forward = original


@pytest.mark.parametrize("layout_name", ["ceval", "cmmlu", "mmlu"])
@pytest.mark.parametrize("template", ["chat", "plain"])
def test_oracle_scores_one_and_uniform_scores_the_share_of_A(
    layout_name, template, engine, tokenizer, restore_forward
):
    from lmforge.evaluate.bench import load_benchmark
    from lmforge.evaluate.mc import LocalScorer, evaluate_mc

    per_subject, by_question = sample_answers(layout_name)
    layout, _, subjects = load_benchmark(samples_dir() / layout_name)
    assert layout == layout_name and {s.name for s in subjects} == set(per_subject)
    lang = "en" if layout_name == "mmlu" else "zh"
    vocab = engine.model.config.vocab_size
    chat = template == "chat"

    scripted(engine, oracle_logits(tokenizer, by_question, vocab))
    for n_shot in (0, 5):
        result = evaluate_mc(LocalScorer(engine, chat, batch_size=4), subjects, n_shot, lang, chat)
        assert result["accuracy"] == 1.0 and result["total"] == sum(map(len, per_subject.values()))

    scripted(engine, lambda ids, width: torch.zeros(width, vocab))
    result = evaluate_mc(LocalScorer(engine, chat, batch_size=4), subjects, 5, lang, chat)
    for subject, answers in per_subject.items():  # ties go to A: accuracy = share of A answers
        assert result["subjects"][subject]["accuracy"] == answers.count("A") / len(answers)
    all_answers = [a for answers in per_subject.values() for a in answers]
    assert result["accuracy"] == all_answers.count("A") / len(all_answers)
    assert abs(result["accuracy"] - 0.25) <= 0.1  # ≈ chance on four options
    assert result["macro_accuracy"] == pytest.approx(
        sum(a.count("A") / len(a) for a in per_subject.values()) / len(per_subject)
    )


def test_prompts_follow_the_benchmark_formats():
    from lmforge.evaluate.bench import Question, Subject
    from lmforge.evaluate.mc import build_prompt

    subject = Subject("astronomy", {"en": "astronomy", "zh": "天文学"}, "STEM", [])
    shot = Question("astronomy", "What is the Sun?", ["A planet", "A star", "A moon", "A comet"], "B")
    q = Question("astronomy", "Which planet is red?", ["Venus", "Mars", "Earth", "Mercury"], "B")
    plain = build_prompt(subject, q, [shot], "en", chat=False)
    assert plain.text == (
        "The following are multiple choice questions (with answers) about astronomy.\n\n"
        "What is the Sun?\nA. A planet\nB. A star\nC. A moon\nD. A comet\nAnswer: B\n\n"
        "Which planet is red?\nA. Venus\nB. Mars\nC. Earth\nD. Mercury\nAnswer:"
    )
    assert plain.candidates == [" A", " B", " C", " D"]
    chat = build_prompt(subject, q, [shot], "zh", chat=True)
    assert chat.messages == [
        {
            "role": "user",
            "content": "以下是中国关于天文学考试的单项选择题，请选出其中的正确答案。\n\n"
            "What is the Sun?\nA. A planet\nB. A star\nC. A moon\nD. A comet\n答案：",
        },
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "Which planet is red?\nA. Venus\nB. Mars\nC. Earth\nD. Mercury\n答案："},
    ]
    assert chat.candidates == ["A", "B", "C", "D"]


def test_eval_command_writes_results_and_table(
    engine, tokenizer, tmp_path, capsys, monkeypatch, restore_forward
):
    per_subject, by_question = sample_answers("ceval")
    scripted(engine, oracle_logits(tokenizer, by_question, engine.model.config.vocab_size))
    monkeypatch.setattr("lmforge.infer.chat.load_engine", lambda args: engine)
    out = tmp_path / "res"
    argv = [
        "eval",
        "any-model",
        "--task_dir",
        "ceval",
        "--subjects",
        "computer_network,middle_school_mathematics",
    ]
    assert main([*argv, "--n_shot", "2", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"computer_network\s+STEM\s+10\s+100\.0", printed) and "overall (micro)" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["accuracy"] == 1.0 and set(result["subjects"]) == {
        "computer_network",
        "middle_school_mathematics",
    }
    assert result["benchmark"] == "ceval" and result["template"] == "chat" and result["n_shot"] == 2
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and all(r["prediction"] == r["answer"] for r in rows)


def test_perplexity_of_a_known_distribution(engine, tokenizer, tmp_path, restore_forward):
    from lmforge.evaluate.ppl import load_texts, perplexity

    data = tmp_path / "text.jsonl"
    docs = ["The capital of France is Paris. " * 6, "日本的首都是东京。", "2 + 2 = 4"]
    data.write_text(
        "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8"
    )
    vocab, p = engine.model.config.vocab_size, 0.25
    boost = math.log(p * (vocab - 1) / (1 - p))  # softmax gives the next token exactly p

    def next_token_p(ids, width):
        out = torch.zeros(width, vocab, dtype=torch.float64)
        out[torch.arange(len(ids) - 1), ids[1:]] = boost
        return out.float()

    scripted(engine, next_token_p)
    texts = load_texts(str(data))
    result = perplexity(engine, texts, max_length=16, batch_size=3)  # windows and padding both used
    n_tokens = sum(
        len(tokenizer(d)["input_ids"]) + 2 - 1 for d in docs
    )  # bos + text + eos, first not predicted
    assert result["tokens"] == n_tokens and result["documents"] == 3
    assert result["loss"] == pytest.approx(-math.log(p), abs=1e-5)
    assert result["perplexity"] == pytest.approx(1 / p, abs=1e-4)
    n_bytes = sum(len(d.encode()) for d in docs)
    assert result["bits_per_byte"] == pytest.approx(
        n_tokens * 2 / n_bytes, abs=1e-5
    )  # log2(4) = 2 bits a token

    scripted(engine, lambda ids, width: torch.zeros(width, vocab))
    assert perplexity(engine, texts, max_length=1024)["perplexity"] == pytest.approx(vocab, rel=1e-5)


def test_generation_metrics_by_hand():
    from lmforge.evaluate.metrics import corpus_bleu, exact_match, generation_scores, rouge_l, tokenize

    assert tokenize("今天 is Sunny! 天气好abc") == ["今", "天", "is", "sunny", "!", "天", "气", "好", "abc"]
    assert exact_match(" yes \n", "yes") == 1.0 and exact_match("yes.", "yes") == 0.0
    # LCS "the cat on the mat" = 5 of 6 tokens each side
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("北京是首都", "首都是北京") == pytest.approx(2 / 5)  # LCS 北京 (or 首都)
    assert rouge_l("abc", "xyz") == 0.0
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths: no brevity penalty
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(
        (1 / 12) ** 0.25
    )
    # all precisions 1; 5 candidate tokens against 8 reference tokens: brevity penalty exp(1 - 8/5)
    assert corpus_bleu(["a b c d e"], ["a b c d e f g h"]) == pytest.approx(math.exp(-0.6))
    assert corpus_bleu(["the cat"], ["the cat sat"]) == 0.0  # no 3- or 4-grams at all
    scores = generation_scores(["4", "Paris is the capital"], ["4", "The capital is Paris"])
    assert scores["exact_match"] == 0.5
    assert scores["rouge_l"] == pytest.approx((1 + 2 / 4) / 2)  # second: LCS "the capital" of 4 tokens


def test_gen_task_end_to_end(tmp_path, tokenizer, capsys):
    from lmforge.models.scratch import init_model

    model_dir = tmp_path / "m"
    init_model(tokenizer, preset="tiny", seed=0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    val = tmp_path / "val.jsonl"
    rows = [
        {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"instruction": "Capital of France?", "input": "", "output": "Paris"},
    ]
    val.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "res"
    argv = ["eval", str(model_dir), "--task", "gen", "--dataset", str(val), "--max_new_tokens", "4"]
    assert main([*argv, "--output_dir", str(out)]) == 0
    assert re.search(r"rows 3\s+exact_match", capsys.readouterr().out)
    result = json.loads((out / "results.json").read_text())
    assert result["rows"] == 3 and result["greedy"] and {"rouge_l", "bleu_4", "exact_match"} <= set(result)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in preds] == ["hello", "4", "Paris"]


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "%|" not in ln]
    assert len(err) == 1 and err[0].startswith("lmforge: error:"), err
    return err[0]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bench = tmp_path / "mmlu" / "test"
    bench.mkdir(parents=True)
    (bench / "algebra_test.csv").write_text("1+1?,1,2,3,4,B\n2+2?,4,3,2,1,E\n", encoding="utf-8")
    err = _one_line_error(
        capsys, ["eval", "m", "--task_dir", str(tmp_path / "mmlu"), "--output_dir", str(tmp_path / "o")]
    )
    assert f"{bench / 'algebra_test.csv'}:2" in err and '"answer"' in err and "'E'" in err
    err = _one_line_error(
        capsys,
        ["eval", "m", "--task_dir", "ceval", "--subjects", "poetry", "--output_dir", str(tmp_path / "o")],
    )
    assert "poetry" in err and "computer_network" in err
    err = _one_line_error(
        capsys, ["eval", "--task", "ppl", "--dataset", "x.txt", "--eval_url", "http://127.0.0.1:9/v1"]
    )
    assert "--task ppl needs a local model" in err
    err = _one_line_error(capsys, ["eval", "m", "--task", "gen"])
    assert "--dataset" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    err = _one_line_error(
        capsys, ["eval", "m", "--task_dir", "ceval", "--output_dir", str(tmp_path / "full")]
    )
    assert "not empty" in err
    err = _one_line_error(
        capsys,
        [
            "eval",
            "--task_dir",
            "ceval",
            "--eval_url",
            "http://127.0.0.1:9/v1",
            "--output_dir",
            str(tmp_path / "o2"),
        ],
    )
    assert "cannot connect" in err


# --- --eval_url ----------------------------------------------------------------------------------
class _StubOpenAI(BaseHTTPRequestHandler):
    """/v1/models and /v1/chat/completions answering with top_logprobs that favour the right letter."""

    answers: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != "Bearer k":
            return self._send({"error": {"message": "bad key"}}, 401)
        text = req["messages"][-1]["content"]
        answer = self.answers[max(self.answers, key=lambda q: text.rfind(q))]
        top = [{"token": t, "logprob": -0.1 if t == answer else -3.0} for t in ("A", "B", "C", "D", "The")]
        choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "length"}
        choice["logprobs"] = {"content": [{"token": answer, "logprob": -0.1, "top_logprobs": top}]}
        self._send({"choices": [choice]})


def test_endpoint_client_uses_logprobs(tmp_path):
    from lmforge.evaluate.args import EvalArgs
    from lmforge.evaluate.run import run_eval
    from lmforge.infer.args import GenerationArgs

    _, by_question = sample_answers("mmlu")
    _StubOpenAI.answers = {q: a for q, a in by_question.items()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        args = EvalArgs(task_dir="mmlu", eval_url=url, api_key="k", output_dir=str(tmp_path / "o"), n_shot=1)
        result, _ = run_eval(args, GenerationArgs())
    finally:
        server.shutdown()
    assert result["accuracy"] == 1.0 and result["methods"] == {"logprobs": 30} and result["model"] == "stub"


def _constant_letter_model(tokenizer, folder, letter="B"):
    """A model that always predicts `letter`: identical embeddings, zero residual updates, one
    lm_head row aligned with the (constant) final hidden state."""
    from lmforge.models.scratch import init_model

    model = init_model(tokenizer, preset="tiny", seed=0, tie_word_embeddings=False)
    with torch.no_grad():
        vec = torch.randn(model.config.hidden_size)
        model.model.embed_tokens.weight.copy_(vec.expand_as(model.model.embed_tokens.weight))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(letter)] = vec / vec.norm() * 50
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _start_serve(model_dir, log_path, timeout=180.0):
    """`lmforge serve MODEL --port 0` in a subprocess; (process, base URL) once /health answers."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    env = {**os.environ, "OMP_NUM_THREADS": "1", "LMFORGE_LOG_LEVEL": "INFO"}
    log = open(log_path, "w")
    argv = [sys.executable, "-m", "lmforge", "serve", str(model_dir), "--port", "0", "--temperature", "0"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"(http://127\.0\.0\.1:\d+)/v1", log_path.read_text())
        if found:
            try:
                with urllib.request.urlopen(f"{found.group(1)}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return proc, found.group(1)
            except OSError:
                pass
        time.sleep(0.2)  # polling the log / readiness endpoint, not timing anything
    proc.kill()
    proc.wait()
    raise AssertionError(f"lmforge serve did not start:\n{log_path.read_text()[-3000:]}")


def test_eval_url_against_lmforge_serve_equals_local(tokenizer, tmp_path, one_thread):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    model_dir = _constant_letter_model(tokenizer, tmp_path / "model")
    val = tmp_path / "val.jsonl"
    val.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            + "\n"
            for q, a in [("Pick a letter", "B"), ("Capital of France?", "Paris")]
        ),
        encoding="utf-8",
    )
    proc, url = _start_serve(model_dir, tmp_path / "serve.log")
    try:
        results = {}
        for where in ("local", "endpoint"):
            source = [str(model_dir)] if where == "local" else ["--eval_url", f"{url}/v1"]
            for task, extra in (
                ("mc", ["--task_dir", "cmmlu", "--n_shot", "1"]),
                ("gen", ["--dataset", str(val)]),
            ):
                out = tmp_path / f"{where}-{task}"
                argv = [
                    "eval",
                    *source,
                    "--task",
                    task,
                    *extra,
                    "--max_new_tokens",
                    "6",
                    "--output_dir",
                    str(out),
                ]
                assert main(argv) == 0
                preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
                results[where, task] = json.loads((out / "results.json").read_text()), preds
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    (local_mc, local_preds), (remote_mc, remote_preds) = results["local", "mc"], results["endpoint", "mc"]
    per_subject, _ = sample_answers("cmmlu")
    all_answers = [a for answers in per_subject.values() for a in answers]
    assert local_mc["accuracy"] == remote_mc["accuracy"] == all_answers.count("B") / len(all_answers)
    assert [p["prediction"] for p in local_preds] == [p["prediction"] for p in remote_preds]
    assert sum(remote_mc["methods"].values()) == 30  # by logprobs, or by the answer's letter where refused
    (local_gen, local_g), (remote_gen, remote_g) = results["local", "gen"], results["endpoint", "gen"]
    assert [p["prediction"] for p in local_g] == [p["prediction"] for p in remote_g] == ["BBBBBB"] * 2
    assert {k: local_gen[k] for k in ("exact_match", "rouge_l", "bleu_4")} == {
        k: remote_gen[k] for k in ("exact_match", "rouge_l", "bleu_4")
    }
