"""`lmforge serve` through the real `openai` client against a server in a subprocess on 127.0.0.1.

A tiny Qwen3 (context 512) is trained here to answer four chats exactly: two with a `<think>` block,
one counting, one calling a tool; a LoRA adapter on it is trained to answer "hi" differently. The
server runs once for the module (`--port 0`: the port is read from its startup line, then /health
is polled). Greedy answers are compared with `Engine` (transformers `generate`) in this process,
and 64 concurrent streams with the same requests sent one at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from lmforge.infer.args import GenerationArgs  # noqa: E402
from lmforge.infer.engine import Engine  # noqa: E402

KEY = "sk-lmforge-test"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = {"name": "get_weather", "arguments": {"city": "paris"}}
# (user, reasoning, answer, tool call): what the base model learns
CONVS = [
    ("hi", "say hello", "hello world, this is lmforge.", None),
    ("fox", "an old sentence", "the quick brown fox jumps over the lazy dog.", None),
    ("count", None, "one two three four five six seven eight nine ten.", None),
    ("weather in paris?", None, "", CALL),
]
ADAPTER_ANSWER = "the quick brown fox jumps over the lazy dog."  # base answers "hi" with hello world
GREEDY = GenerationArgs(temperature=0, max_new_tokens=64)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# The tiny models


def _chat(user, reasoning, answer, call):
    msg = {"role": "assistant", "content": answer}
    if reasoning:
        msg["reasoning_content"] = reasoning
    if call:
        msg["tool_calls"] = [{"type": "function", "function": call}]
    return [{"role": "user", "content": user}, msg], (TOOLS if call else None)


def _fit(model, tok, convs, steps):
    """Train `model` on whole rendered chats until it reproduces them (fixed seed). Each chat is its
    own micro-batch (no padding: the tool chat is 4x longer than the others)."""
    from lmforge.data.template import render_chat

    rows = [
        torch.tensor([tok(render_chat(*_chat(*c)), add_special_tokens=False)["input_ids"]]) for c in convs
    ]
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        for x in rows:
            model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(base model folder, LoRA adapter folder)."""
    from peft import LoraConfig, get_peft_model

    from lmforge.data.template import render_chat
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer, train_tokenizer

    tmp = tmp_path_factory.mktemp("serve_models")
    corpus = tmp / "corpus.txt"
    texts = [render_chat(*_chat(*c)) for c in CONVS] + [ADAPTER_ANSWER, "system user assistant words"]
    corpus.write_text("\n".join(texts * 20), encoding="utf-8")
    tok = load_tokenizer(train_tokenizer([str(corpus)], str(tmp / "tok"), vocab_size=600, min_frequency=1))
    model = _fit(init_model(tok, preset="tiny", seed=0, max_position_embeddings=512), tok, CONVS, 150)
    base = tmp / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    _fit(lora, tok, [("hi", None, ADAPTER_ANSWER, None)], 80)
    adapter = tmp / "adapter"
    lora.save_pretrained(adapter)
    return base, adapter


@pytest.fixture(scope="module")
def engine(models):
    return Engine.from_path(str(models[0]))


# ---------------------------------------------------------------------------------------------
# The server


def start_server(argv: list[str], log_path: Path, timeout: float = 180.0):
    """Start `lmforge serve` (with `--port 0`); returns (process, base URL) once /health answers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "serve", *argv, "--port", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline and proc.poll() is None:
        if url is None:
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", log_path.read_text())
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)  # polling the log / readiness endpoint, not waiting for a result
    proc.kill()
    proc.wait()
    raise AssertionError(f"server did not start:\n{log_path.read_text()[-3000:]}")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    base, adapter = models
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    argv = [str(base), "--api_key", KEY, "--served_model_name", "tiny", "--adapters", f"lora={adapter}"]
    argv += [
        "--temperature",
        "0",
        "--max_new_tokens",
        "64",
        "--max_batch_size",
        "64",
        "--batch_wait_ms",
        "20",
    ]
    proc, url = start_server(argv, log)
    yield url
    stop_server(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def user(text):
    return [{"role": "user", "content": text}]


def stream_text(stream):
    """(content, reasoning, finish reasons by index, usage chunk or None) of a chat stream."""
    content, reasoning, finish, usage = {}, {}, {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            content[ch.index] = content.get(ch.index, "") + (ch.delta.content or "")
            reasoning[ch.index] = reasoning.get(ch.index, "") + (
                getattr(ch.delta, "reasoning_content", None) or ""
            )
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    return content, reasoning, finish, usage


# ---------------------------------------------------------------------------------------------
# Chat


def test_chat_answer_reasoning_and_usage_match_the_engine(client, engine):
    for u, reasoning, answer, _ in CONVS[:3]:
        r = client.chat.completions.create(model="tiny", messages=user(u))
        done = engine.chat(user(u), GREEDY)  # the engine, in this process
        msg = r.choices[0].message
        assert (msg.content, r.choices[0].finish_reason) == (answer, "stop")
        assert getattr(msg, "reasoning_content", None) == reasoning
        assert (msg.content, getattr(msg, "reasoning_content", None)) == (done.text, done.reasoning_content)
        prompt = engine.tokenizer.apply_chat_template(user(u), add_generation_prompt=True, tokenize=False)
        assert r.usage.prompt_tokens == len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        # every generated token, the closing <|im_end|> included
        assert r.usage.completion_tokens == len(done.token_ids)
        assert r.usage.completion_tokens == len(engine.tokenizer(done.raw_text)["input_ids"]) + 1
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert r.model == "tiny" and r.object == "chat.completion" and r.id.startswith("chatcmpl-")


def test_seeded_sample_equals_chat_with_the_same_seed(client, engine):
    """serve and chat decode with the one loop (lmforge/decode/): the same sampling settings and seed
    give the same sampled answer; other seeds give other answers."""
    answers = set()
    for seed in (5, 6, 7):
        gen = GenerationArgs(temperature=2.0, top_p=0.95, top_k=50, seed=seed, max_new_tokens=24)
        done = engine.chat(user("hi"), gen)
        r = client.chat.completions.create(
            model="tiny",
            messages=user("hi"),
            temperature=2.0,
            top_p=0.95,
            seed=seed,
            max_tokens=24,
            extra_body={"top_k": 50},
        )
        msg = r.choices[0].message
        assert (msg.content, getattr(msg, "reasoning_content", None)) == (done.text, done.reasoning_content)
        assert r.usage.completion_tokens == len(done.token_ids)
        answers.add(done.raw_text)
    assert len(answers) == 3


def test_stream_concatenates_to_the_answer_and_ends_with_done(client, server):
    whole = client.chat.completions.create(model="tiny", messages=user("hi"))
    stream = client.chat.completions.create(
        model="tiny", messages=user("hi"), stream=True, stream_options={"include_usage": True}
    )
    content, reasoning, finish, usage = stream_text(stream)
    assert content[0] == whole.choices[0].message.content == "hello world, this is lmforge."
    assert reasoning[0] == whole.choices[0].message.reasoning_content == "say hello"
    assert finish == {0: "stop"}
    assert usage.model_dump() == whole.usage.model_dump()
    # the raw event stream: one data line per event, usage chunk with empty choices, then [DONE]
    body = {
        "model": "tiny",
        "messages": user("fox"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in resp.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][len("data: ") :])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    pieces = [json.loads(ln[6:])["choices"] for ln in lines[:-2]]
    assert len(pieces) > 5  # streamed piece by piece, not in one chunk
    text = "".join(c[0]["delta"].get("content") or "" for c in pieces)
    assert text == "the quick brown fox jumps over the lazy dog."


def test_n_choices_and_seeded_sampling(client):
    greedy = client.chat.completions.create(model="tiny", messages=user("fox"), n=2)
    assert [c.index for c in greedy.choices] == [0, 1]
    assert {c.message.content for c in greedy.choices} == {"the quick brown fox jumps over the lazy dog."}

    def sample(seed, n=2):
        r = client.chat.completions.create(
            model="tiny", messages=user("paris two dog"), n=n, temperature=1.0, seed=seed, max_tokens=12
        )
        return [c.message.content for c in r.choices], r.usage.completion_tokens

    first = sample(7)
    assert sample(7) == first  # same seed, same samples
    assert len(first[0]) == 2
    samples = {tuple(sample(s)[0]) for s in range(4)}
    assert len(samples) > 1  # an unseen prompt at temperature 1: seeds give different samples


def test_stop_strings_and_max_tokens(client):
    for stop, expected in (("five", "one two three four "), (["nine", " five"], "one two three four")):
        r = client.chat.completions.create(model="tiny", messages=user("count"), stop=stop)
        assert (r.choices[0].message.content, r.choices[0].finish_reason) == (expected, "stop")
        content, _, finish, _ = stream_text(
            client.chat.completions.create(model="tiny", messages=user("count"), stop=stop, stream=True)
        )
        assert (content[0], finish[0]) == (expected, "stop")
    r = client.chat.completions.create(model="tiny", messages=user("count"), max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    r = client.chat.completions.create(model="tiny", messages=user("count"), max_completion_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2


def test_tool_calls(client):
    r = client.chat.completions.create(model="tiny", messages=user("weather in paris?"), tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "paris"}
    stream = client.chat.completions.create(
        model="tiny", messages=user("weather in paris?"), tools=TOOLS, stream=True
    )
    calls, finish = [], None
    for chunk in stream:
        for ch in chunk.choices:
            assert not ch.delta.content  # the markup never leaks as text
            calls += ch.delta.tool_calls or []
            finish = ch.finish_reason or finish
    assert finish == "tool_calls" and [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "paris"}
    # without tools in the request the markup is plain text
    r = client.chat.completions.create(
        model="tiny", messages=user("weather in paris?"), tools=TOOLS, tool_choice="none"
    )
    assert r.choices[0].message.tool_calls is None


# ---------------------------------------------------------------------------------------------
# Completions, models, adapters


def test_text_completions(client, engine):
    gen = GenerationArgs(temperature=0, max_new_tokens=10)
    prompts = ["the quick brown", "one two"]
    r = client.completions.create(model="tiny", prompt=prompts, max_tokens=10)
    assert r.object == "text_completion" and [c.index for c in r.choices] == [0, 1]
    expected = [engine.complete(p, gen) for p in prompts]
    assert [c.text for c in r.choices] == [e.raw_text for e in expected]
    assert r.usage.prompt_tokens == sum(e.prompt_tokens for e in expected)
    assert r.usage.completion_tokens == sum(e.completion_tokens for e in expected)
    stream = client.completions.create(model="tiny", prompt=prompts[0], max_tokens=10, stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text == expected[0].raw_text
    default = client.completions.create(model="tiny", prompt=prompts[0], extra_body={"ignore_eos": True})
    assert default.usage.completion_tokens == 16  # OpenAI's default max_tokens for completions
    echo = client.completions.create(model="tiny", prompt=prompts[0], max_tokens=3, echo=True)
    assert echo.choices[0].text.startswith(prompts[0])


# ---------------------------------------------------------------------------------------------
# Log-probabilities, response_format, tool_choice


def _model_logprobs(engine, ids):
    """log_softmax of the model's logits over `ids`, computed here: (T, V)."""
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def test_chat_logprobs_are_the_models_log_softmax(client, engine):
    r = client.chat.completions.create(
        model="tiny", messages=user("fox"), logprobs=True, top_logprobs=3, max_tokens=6
    )
    done = engine.chat(user("fox"), GenerationArgs(temperature=0, max_new_tokens=6))
    prompt = engine.encode(user("fox"), GREEDY)
    logp = _model_logprobs(engine, prompt + done.token_ids)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == len(done.token_ids) == 6
    for t, (item, tid) in enumerate(zip(content, done.token_ids)):
        row = logp[len(prompt) + t - 1]
        assert item.token == engine.tokenizer.decode([tid]) and item.bytes == list(item.token.encode())
        assert item.logprob == pytest.approx(float(row[tid]), abs=1e-4)
        values, ids = row.topk(3)
        assert [x.token for x in item.top_logprobs] == [engine.tokenizer.decode([i]) for i in ids.tolist()]
        assert [x.logprob for x in item.top_logprobs] == pytest.approx(values.tolist(), abs=1e-4)
    stream = client.chat.completions.create(
        model="tiny", messages=user("fox"), logprobs=True, top_logprobs=3, max_tokens=6, stream=True
    )
    streamed = [x for chunk in stream for ch in chunk.choices if ch.logprobs for x in ch.logprobs.content]
    assert [(x.token, x.logprob) for x in streamed] == [(x.token, x.logprob) for x in content]
    plain = client.chat.completions.create(model="tiny", messages=user("fox"), max_tokens=6)
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(model="tiny", messages=user("fox"), top_logprobs=2)


def test_completion_echo_logprobs_are_what_lm_eval_reads(client, engine):
    ids = engine.encode("the quick brown fox", GREEDY)  # bos first, as the server encodes text
    logp = _model_logprobs(engine, ids)
    for max_tokens in (0, 1):
        for prompt in ("the quick brown fox", [ids]):  # text, or token ids as lm-eval sends them
            r = client.completions.create(
                model="tiny", prompt=prompt, max_tokens=max_tokens, echo=True, logprobs=2, temperature=0
            )
            lp = r.choices[0].logprobs
            assert len(lp.tokens) == len(ids) + max_tokens == len(lp.token_logprobs)
            assert lp.tokens[: len(ids)] == [engine.tokenizer.decode([i]) for i in ids]
            assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
            expected = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
            assert lp.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=1e-4)
            for t in range(1, len(ids)):  # the 2 most likely tokens, plus the actual one
                top = {engine.tokenizer.decode([i]): v for i, v in zip(*logp[t - 1].topk(2)[::-1])}
                assert set(top) <= set(lp.top_logprobs[t]) and len(lp.top_logprobs[t]) <= 3
                assert max(lp.top_logprobs[t].values()) == pytest.approx(float(logp[t - 1].max()), abs=1e-4)
            assert r.usage.completion_tokens == max_tokens
            if max_tokens:  # the generated token is the greedy one, with its log-prob
                assert lp.token_logprobs[-1] == pytest.approx(float(logp[-1].max()), abs=1e-4)
    stream = client.completions.create(
        model="tiny", prompt="the quick brown fox", max_tokens=3, echo=True, logprobs=1, stream=True
    )
    streamed = [v for c in stream for ch in c.choices if ch.logprobs for v in ch.logprobs.token_logprobs]
    assert streamed[0] is None and len(streamed) == len(ids) + 3
    with pytest.raises(openai.BadRequestError, match="only useful with echo"):
        client.completions.create(model="tiny", prompt="the", max_tokens=0)


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["paris", "rome"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 9},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "days", "sunny"],
    "additionalProperties": False,
}


def test_response_format_gives_json_that_matches_the_schema(client, server):
    free = client.chat.completions.create(model="tiny", messages=user("hi"))
    assert free.choices[0].message.content == "hello world, this is lmforge."  # not JSON unconstrained
    fmt = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}}
    for u in ("hi", "count", "paris two dog"):
        r = client.chat.completions.create(model="tiny", messages=user(u), response_format=fmt, max_tokens=40)
        obj = json.loads(r.choices[0].message.content)
        assert r.choices[0].finish_reason == "stop" and set(obj) == {"city", "days", "sunny"}, repr(
            r.choices[0].message.content
        )
        assert obj["city"] in ("paris", "rome") and isinstance(obj["sunny"], bool)
        assert type(obj["days"]) is int and 1 <= obj["days"] <= 9
    # Any object: the grammar holds the answer to one JSON object, but nothing bounds a string in it, so
    # a tiny model may write one until max_tokens (which answer it gives depends on the CPU's float
    # kernels). Finished answers must parse as an object; cut ones must still be an object's start.
    for u in ("count", "hi", "paris two dog"):
        r = client.chat.completions.create(
            model="tiny", messages=user(u), response_format={"type": "json_object"}, max_tokens=60
        )
        text = r.choices[0].message.content
        assert text.lstrip().startswith("{"), repr(text)
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict), repr(text)
        else:
            assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 60
    r = client.completions.create(
        model="tiny", prompt="the quick", max_tokens=40, extra_body={"response_format": fmt}
    )
    assert set(json.loads(r.choices[0].text)) == {"city", "days", "sunny"}
    for bad, message in (
        ({"type": "xml"}, "response_format.type 'xml' is not supported"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "expected a JSON schema object"),
        ({"type": "json_schema", "json_schema": {"schema": {"type": "bogus"}}}, "response_format"),
    ):
        with pytest.raises(openai.BadRequestError, match=re.escape(message)):
            client.chat.completions.create(model="tiny", messages=user("hi"), response_format=bad)


TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["utc", "cet"]}},
            "required": ["zone"],
        },
    },
}


def test_tool_choice_required_and_named_force_a_call(client):
    free = client.chat.completions.create(model="tiny", messages=user("hi"), tools=TOOLS)
    assert free.choices[0].message.tool_calls is None  # the model would answer in text
    r = client.chat.completions.create(
        model="tiny", messages=user("hi"), tools=TOOLS, tool_choice="required", max_tokens=60
    )
    (call,) = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    named = {"type": "function", "function": {"name": "get_time"}}
    for u in ("weather in paris?", "hi"):  # the first would call get_weather unforced
        r = client.chat.completions.create(
            model="tiny", messages=user(u), tools=[*TOOLS, TIME_TOOL], tool_choice=named, max_tokens=60
        )
        (call,) = r.choices[0].message.tool_calls
        assert call.function.name == "get_time"
        assert json.loads(call.function.arguments)["zone"] in ("utc", "cet")
    for kwargs, message in (
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not in tools"),
        ({"tool_choice": "required"}, "needs at least one function"),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "combined"),
    ):
        with pytest.raises(openai.BadRequestError, match=message):
            client.chat.completions.create(model="tiny", messages=user("hi"), **kwargs)


def test_models_and_adapter_selection(client):
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["tiny", "lora"]
    base = client.chat.completions.create(model="tiny", messages=user("hi"))
    tuned = client.chat.completions.create(model="lora", messages=user("hi"))
    assert base.choices[0].message.content == "hello world, this is lmforge."
    assert tuned.choices[0].message.content == ADAPTER_ANSWER
    assert tuned.model == "lora"

    # concurrent requests for both names: each batch holds one adapter, every answer is right
    results: dict[int, str] = {}

    def ask(i):
        name = "lora" if i % 2 else "tiny"
        r = client.chat.completions.create(model=name, messages=user("hi"))
        results[i] = r.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: ADAPTER_ANSWER if i % 2 else "hello world, this is lmforge." for i in range(8)}


# ---------------------------------------------------------------------------------------------
# Errors


def test_auth(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="tiny", messages=user("hi"))
    assert err.value.status_code == 401
    r = httpx.get(f"{server}/v1/models")
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{server}/health").status_code == 200  # liveness needs no key


def test_non_ascii_api_key_is_a_401_not_a_crash(server):
    """Header bytes outside ASCII (a key with an accent, raw latin-1) are a wrong key: 401 with
    OpenAI's body, the connection intact (the next request on the same client works)."""
    with httpx.Client(base_url=server, timeout=30) as http:
        for raw in ("Bearer sk-clé".encode(), b"Bearer sk-\xe9\xff", "Bearer ключ".encode()):
            r = http.get("/v1/models", headers={"Authorization": raw})
            assert r.status_code == 401, (raw, r.status_code, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert "Error" not in r.json()["error"]["message"]  # no Python exception text
        ok = http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200  # same connection pool, still served
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):  # the real client, a (non-ASCII-free) wrong key
        bad.models.list()


def test_a_non_ascii_server_key_is_matched_as_utf8_bytes(engine):
    """A server whose key has non-ASCII characters accepts that key sent as UTF-8 bytes and
    refuses any other bytes with 401."""
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app, key_matches
    from lmforge.serve.service import Service

    key = "sk-ключ-é"
    app = create_app(Service(engine, _scheduler(engine), {"tiny": None}, GREEDY, api_key=key))
    with TestClient(app) as http:
        assert http.get("/v1/models", headers={"Authorization": b"Bearer " + key.encode()}).status_code == 200
        for raw in (b"Bearer " + key.encode()[:-1], b"Bearer sk-\xe9", b"Bearer sk-lmforge-test"):
            assert http.get("/v1/models", headers={"Authorization": raw}).status_code == 401, raw
    assert key_matches(key.encode().decode("latin-1"), key) and not key_matches("sk-", key)


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": 5}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_bad_params_are_openai_400s(client, server, extra, param):
    body = {"model": "tiny", "messages": user("hi"), **extra}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**body)
    assert err.value.status_code == 400
    r = httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"].startswith(param), error


def test_malformed_body_and_unknown_route(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{server}/v1/chat/completions", json={"messages": user("hi")}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = httpx.get(f"{server}/v1/nothing", headers=headers)
    assert r.status_code == 404 and "error" in r.json()


def test_context_overflow_is_a_400_with_the_numbers(client):
    long = " ".join(["fox"] * 600)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=user(long))
    body = err.value.body
    assert body["code"] == "context_length_exceeded"
    assert re.search(
        r"maximum context length is 512 tokens\. However, your messages resulted in \d+ tokens",
        body["message"],
    ), body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=user("hi"), max_tokens=600)
    assert re.search(
        r"you requested \d+ tokens \(\d+ in the messages, 600 in the completion\)", err.value.body["message"]
    )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=long, max_tokens=4)


@pytest.mark.parametrize(
    "api, kwargs, param",
    [
        ("chat", {"messages": user(" ".join(["fox"] * 600))}, "messages"),  # the prompt alone
        ("chat", {"messages": user(" ".join(["fox"] * 600)), "max_tokens": 5}, "messages"),
        ("chat", {"messages": user("hi"), "max_tokens": 600}, "max_tokens"),
        ("chat", {"messages": user("hi"), "max_completion_tokens": 600}, "max_completion_tokens"),
        ("text", {"prompt": " ".join(["fox"] * 600), "max_tokens": 4}, "prompt"),
        ("text", {"prompt": " ".join(["fox"] * 600)}, "prompt"),  # max_tokens left at 16
        ("text", {"prompt": "one two", "max_tokens": 600}, "max_tokens"),
    ],
)
def test_context_overflow_names_the_field_to_change(client, api, kwargs, param):
    create = client.chat.completions.create if api == "chat" else client.completions.create
    with pytest.raises(openai.BadRequestError) as err:
        create(model="tiny", **kwargs)
    body = err.value.body
    assert err.value.status_code == 400 and body["code"] == "context_length_exceeded"
    assert body["param"] == param, body
    assert "maximum context length is 512 tokens" in body["message"]


def test_a_request_that_never_fits_is_a_400_not_a_retryable_503(client, server):
    """5,000 prompts can never enter a queue of 256: 400 naming the limit, at once, and the
    server still answers afterwards."""
    start = time.monotonic()
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt=["one two"] * 5000, max_tokens=1)
    assert time.monotonic() - start < 30  # refused before tokenising 5,000 prompts one by one
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == "prompt" and body["code"] == "too_many_sequences"
    assert "5000 sequences" in body["message"] and "--max_queue 256" in body["message"]
    with pytest.raises(openai.BadRequestError) as err:  # prompts x n counts
        client.completions.create(model="tiny", prompt=["one two"] * 3, n=100, max_tokens=1)
    assert "300 sequences" in err.value.body["message"]
    r = client.completions.create(model="tiny", prompt=["one two"] * 2, n=128, max_tokens=1)
    assert len(r.choices) == 256  # exactly the limit fits
    assert httpx.get(f"{server}/health").json()["waiting"] == 0


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert "gpt-4o" in err.value.body["message"] and err.value.body["code"] == "model_not_found"


# ---------------------------------------------------------------------------------------------
# Load: 64 concurrent streams, each exactly its answer alone


def split(raw: str) -> tuple[str, str | None]:
    """(content, reasoning) the server reports for a raw answer. Unlike `split_thinking` it never
    takes text before a lone `</think>` as reasoning (the prompt did not open a think block), which
    untrained prompts here sometimes produce."""
    from lmforge.infer.text import ChatDeltas

    d = ChatDeltas()
    deltas = d.feed(raw, final=True)
    reasoning = "".join(x.get("reasoning_content", "") for x in deltas)
    return "".join(x.get("content", "") for x in deltas), reasoning if d.seen_think else None


def _load_prompts(n=64):
    import random

    words = "hi fox count say hello the quick brown dog one two three weather in paris".split()
    rng = random.Random(0)
    return [" ".join(rng.choices(words, k=rng.randint(1, 14))) for _ in range(n)]


def test_64_concurrent_streams_equal_their_answers_alone(client, server, engine):
    prompts = _load_prompts()
    alone = []
    for p in prompts:  # one at a time: each runs in a batch of its own
        r = client.chat.completions.create(model="tiny", messages=user(p), max_tokens=12)
        alone.append((r.choices[0].message.content, getattr(r.choices[0].message, "reasoning_content", None)))
    offline = engine.generate_batch(
        [user(p) for p in prompts], GenerationArgs(temperature=0, max_new_tokens=12)
    )
    assert alone == [split(c.raw_text) for c in offline]  # == transformers generate
    assert len(set(alone)) > 8  # the rows really differ

    async def one(aclient, p):
        stream = await aclient.chat.completions.create(
            model="tiny", messages=user(p), max_tokens=12, stream=True
        )
        content = reasoning = ""
        finished = False
        async for chunk in stream:
            for ch in chunk.choices:
                content += ch.delta.content or ""
                reasoning += getattr(ch.delta, "reasoning_content", None) or ""
                finished = finished or ch.finish_reason is not None
        assert finished
        return content, reasoning

    async def burst():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120) as ac:
            return await asyncio.gather(*(one(ac, p) for p in prompts))

    together = asyncio.run(burst())
    assert [c for c, _ in together] == [c for c, _ in alone]
    assert [r for _, r in together] == [r or "" for _, r in alone]
    health = httpx.get(f"{server}/health").json()
    assert health["peak_batch"] > 1  # they were batched
    assert health["running"] == 0 and health["waiting"] == 0


def test_64_concurrent_text_completions_are_all_answered(client, server):
    """64 plain (non-streamed) /v1/completions at once: every one is a 200 with its own answer,
    the same as the prompt sent alone."""
    prompts = _load_prompts()

    async def burst():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120) as ac:
            calls = (ac.completions.create(model="tiny", prompt=p, max_tokens=8) for p in prompts)
            return await asyncio.gather(*calls, return_exceptions=True)

    together = asyncio.run(burst())
    failed = [r for r in together if isinstance(r, BaseException)]
    assert not failed, failed[:3]
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in together)
    for p, r in list(zip(prompts, together))[:8]:  # spot-check: same as alone
        alone = client.completions.create(model="tiny", prompt=p, max_tokens=8)
        assert r.choices[0].text == alone.choices[0].text
    assert len({r.choices[0].text for r in together}) > 4  # the rows really differ
    assert httpx.get(f"{server}/health").json()["waiting"] == 0


# ---------------------------------------------------------------------------------------------
# In-process: queue limit, cancellation, CLI errors, vLLM guard, text and sampling helpers


def _scheduler(engine, **kw):
    from lmforge.decode.batch import Runner
    from lmforge.serve.scheduler import Scheduler

    return Scheduler(Runner(engine.model, engine.pad_id), engine.decode, engine.eos_ids, **kw)


def test_full_queue_is_503(engine):
    from fastapi.testclient import TestClient

    from lmforge.decode.loop import Job
    from lmforge.decode.sampling import SamplingParams
    from lmforge.serve.app import create_app
    from lmforge.serve.service import Service

    sched = _scheduler(engine, max_queue=2)  # never started: whatever is queued stays queued
    sched.submit([Job([1, 2], SamplingParams(max_tokens=4), None, lambda ev: None)])
    app = create_app(Service(engine, sched, {"tiny": None}, GREEDY))
    with TestClient(app) as http:
        r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": user("hi"), "n": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert "--max_queue 2" in r.json()["error"]["message"]
        assert sched.num_waiting == 1  # the refused request left nothing behind
        assert http.get("/health").json()["waiting"] == 1


def test_constrained_output_without_llguidance_is_a_400_not_free_text(engine, monkeypatch):
    from fastapi.testclient import TestClient

    from lmforge.serve import constrain
    from lmforge.serve.app import create_app
    from lmforge.serve.service import Service

    monkeypatch.setattr(constrain, "_llguidance", lambda: None)  # as if the package were absent
    sched = _scheduler(engine)  # never started: a request that got queued would hang the test
    app = create_app(Service(engine, sched, {"tiny": None}, GREEDY))
    with TestClient(app) as http:
        for body, param in (
            ({"response_format": {"type": "json_object"}}, "response_format"),
            ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
        ):
            r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": user("hi"), **body})
            error = r.json()["error"]
            assert r.status_code == 400 and error["param"] == param
            assert "pip install 'lmforge[serve]'" in error["message"] and "llguidance" in error["message"]
        assert sched.num_waiting == 0


def test_a_cancelled_row_leaves_the_batch(engine):
    from lmforge.decode.loop import Job
    from lmforge.decode.sampling import SamplingParams

    sched = _scheduler(engine)
    sched.start()
    try:
        got, started, done = [], threading.Event(), threading.Event()
        endless = Job(
            engine.encode(user("hi"), GREEDY),
            SamplingParams(max_tokens=400, ignore_eos=True),
            None,
            lambda ev: (got.append(ev), started.set()),
        )
        short = Job(
            engine.encode(user("fox"), GREEDY),
            SamplingParams(max_tokens=30),
            None,
            lambda ev: ev[0] == "done" and done.set(),
        )
        sched.submit([endless, short])
        assert started.wait(60)
        endless.cancelled = True  # what the app does when a client leaves a stream
        assert done.wait(60)  # the other row carries on
        deadline = time.monotonic() + 60
        while sched.num_running and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the scheduler's state
        assert sched.num_running == 0
        assert not any(ev[0] == "done" for ev in got) and len(got) < 100
    finally:
        sched.stop()


def _one_line_error(capsys, argv):
    from lmforge.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    err = [ln for ln in err if ln.strip() and "%|" not in ln and "kernels" not in ln]  # progress bars aside
    assert len(err) == 1 and err[0].startswith("lmforge: error:"), err
    return err[0]


def test_cli_errors_are_one_line(models, capsys):
    import socket

    base, adapter = models
    assert "no adapter_config.json" in _one_line_error(capsys, ["serve", str(base), "--adapters", "x=/nope"])
    assert "name=path" in _one_line_error(capsys, ["serve", str(base), "--adapters", "=x"])
    assert "--max_batch_size 0" in _one_line_error(capsys, ["serve", str(base), "--max_batch_size", "0"])
    vllm = _one_line_error(capsys, ["serve", str(base), "--backend", "vllm"])  # no vLLM or no CUDA here
    assert "--backend vllm" in vllm and ("not installed" in vllm or "CUDA" in vllm)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert "cannot listen there" in _one_line_error(capsys, ["serve", str(base), "--port", port])


def test_help_lists_every_flag(capsys):
    from lmforge.cli import main

    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--api_key",
        "--served_model_name",
        "--adapters",
        "--lora_modules",
        "--max_batch_size",
        "--max_queue",
        "--batch_wait_ms",
        "--backend",
        "--temperature",
        "--lora_weight",
    ):
        assert f"  {flag}" in out, flag


def test_adapters_spec_api_key_env_and_vllm_command(models, monkeypatch):
    from lmforge.serve.args import ServeArgs, parse_adapters
    from lmforge.serve.server import api_key_of
    from lmforge.serve.vllm import vllm_argv

    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-env")
    monkeypatch.setenv("LMFORGE_API_KEY", "from-lmforge-env")
    assert api_key_of(ServeArgs(api_key="flag")) == "flag"
    assert api_key_of(ServeArgs()) == "from-lmforge-env"
    monkeypatch.delenv("LMFORGE_API_KEY")
    assert api_key_of(ServeArgs()) == "from-openai-env"

    base, adapter = models
    assert parse_adapters("a=/x, /y/b", '[{"name": "c", "path": "/z"}]') == {
        "a": "/x",
        "b": "/y/b",
        "c": "/z",
    }
    args = ServeArgs(model=str(base), served_model_name="tiny", port=9000, max_batch_size=32)
    argv = vllm_argv(args, GREEDY, {"lora": str(adapter)}, KEY)
    joined = " ".join(argv)
    assert f"--model {base} --served-model-name tiny" in joined and "--port 9000" in joined
    assert "--max-num-seqs 32" in joined and f"--api-key {KEY}" in joined
    assert f"--enable-lora --max-lora-rank 8 --lora-modules lora={adapter}" in joined


def test_row_text_streams_utf8_and_cuts_at_stop_strings(tokenizer):
    from lmforge.decode.text import RowText

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)

    text = "日本的首都是东京。The capital of France is Paris."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(text.encode())  # some tokens hold part of a character
    for stops, expected in (
        ([], text),
        (["France"], "日本的首都是东京。The capital of "),
        (["东京"], "日本的首都是"),
    ):
        row, pieces = RowText(decode, stops), []
        for t in ids:
            pieces.append(row.feed(t))
            if row.stopped:
                break
        pieces.append(row.finish())
        assert "".join(pieces) == expected and not any("\ufffd" in p for p in pieces)
        assert row.stopped == bool(stops)


def test_chat_deltas_do_not_depend_on_how_text_is_cut():
    import random

    from lmforge.infer.engine import split_thinking

    rng = random.Random(0)
    for raw in (
        "<think>\nwhy\n</think>\n\nbecause",
        "\n<think>a b</think>c",
        "plain\n text",
        "<think>cut off",
    ):
        whole = split(raw)
        assert whole == tuple(reversed(split_thinking(raw)))
        for _ in range(20):
            from lmforge.infer.text import ChatDeltas

            cuts = sorted(rng.sample(range(1, len(raw)), rng.randint(1, min(6, len(raw) - 1))))
            d, out = ChatDeltas(), []
            for a, b in zip([0, *cuts], [*cuts, len(raw)]):
                out += d.feed(raw[a:b])
            out += d.feed("", final=True)
            content = "".join(x.get("content", "") for x in out)
            reasoning = "".join(x.get("reasoning_content", "") for x in out) if d.seen_think else None
            assert (content, reasoning) == whole


def test_sampling_rows_are_independent():
    from types import SimpleNamespace

    from lmforge.decode.sampling import SamplingParams, next_tokens

    def row(**kw):
        params = SamplingParams(max_tokens=1, **kw)
        return SimpleNamespace(params=params, prompt=[1], generated=[], rng=params.generator())

    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]] * 4)
    rows = [
        row(),
        row(temperature=1.0, top_k=1),
        row(temperature=1.0, top_p=0.01),
        row(temperature=1.0, seed=3),
    ]
    assert next_tokens(logits, rows)[:3] == [1, 1, 1]  # greedy, top-k 1 and a tiny top-p all take the max
    draws = [next_tokens(logits[:1], [row(temperature=1.0, seed=3)])[0] for _ in range(3)]
    assert len(set(draws)) == 1  # one seed, one sample
    many = {next_tokens(logits[:1], [row(temperature=5.0, seed=s)])[0] for s in range(40)}
    assert many == {0, 1, 2, 3}  # a hot distribution reaches every token
    penalised = row(repetition_penalty=10.0)
    penalised.generated = [1]
    assert next_tokens(logits[:1].clone(), [penalised]) == [2]


def test_an_adapter_as_the_model_with_more_adapters(models, monkeypatch):
    """`lmforge serve BASE --lora_weight A --adapters again=A`: the model is the adapter, its bare
    base is NAME-base, and the extra adapter has its own name (loaded as run_serve loads them)."""
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.args import ServeArgs
    from lmforge.serve.server import build_service

    base, adapter = models
    monkeypatch.delenv("LMFORGE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ServeArgs(model=str(base), lora_weight=str(adapter), served_model_name="mine")
    service = build_service(args, GREEDY, {"again": str(adapter)})
    assert service.models == {"mine": "default", "mine-base": None, "again": "again"}
    service.scheduler.start()
    try:
        with TestClient(create_app(service)) as http:
            answers = {}
            for name in service.models:
                r = http.post("/v1/chat/completions", json={"model": name, "messages": user("hi")})
                answers[name] = r.json()["choices"][0]["message"]["content"]
            cards = {m["id"]: m["parent"] for m in http.get("/v1/models").json()["data"]}
    finally:
        service.scheduler.stop()
    base_answer = "hello world, this is lmforge."
    assert answers == {"mine": ADAPTER_ANSWER, "mine-base": base_answer, "again": ADAPTER_ANSWER}
    assert cards == {"mine": "mine-base", "mine-base": None, "again": "mine-base"}
