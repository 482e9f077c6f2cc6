"""A model fine-tuned from a folder whose tokenizer has its own (non-ChatML) chat template, then
served by `lmforge serve`: the prompt the server builds for a conversation is, token for token, the
start of the training row of that conversation, and the answer's trained tokens follow right after."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from chat_tokenizers import make_tokenizer  # noqa: E402

from lmforge.data.chat_templates import LLAMA3  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CONVS = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "法国的首都是哪里？"},
        {"role": "assistant", "content": "法国的首都是巴黎。"},
    ],
    [
        {"role": "user", "content": "Answer briefly and politely."},
        {"role": "assistant", "content": "Paris, capital city."},
    ],
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, training rows' ids, labels) of 2 SFT steps from a llama3-style base folder."""
    from lmforge.data import convert
    from lmforge.models.scratch import init_model
    from lmforge.pipeline import run_train

    tmp = tmp_path_factory.mktemp("template_serve")
    tok = make_tokenizer("bpe", "llama3", LLAMA3)
    base = tmp / "base"
    init_model(tok, preset="tiny", seed=0, max_position_embeddings=512).save_pretrained(base)
    tok.save_pretrained(base)
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in CONVS))
    run = run_train(
        "sft",
        [
            "--model_name_or_path", str(base), "--dataset", str(data), "--output_dir", str(tmp / "run"),
            "--tokenized_path", str(tmp / "tokens"), "--max_steps", "2", "--max_length", "256",
            "--per_device_train_batch_size", "1", "--report_to", "none", "--plot", "false",
        ],
    )  # fmt: skip
    train, _, _ = convert.load_converted(str(tmp / "tokens"))
    return run, [list(r) for r in train["input_ids"]], [list(r) for r in train["labels"]]


def test_served_prompt_is_a_prefix_of_the_training_row(trained, tmp_path):
    from test_serve import start_server, stop_server

    run, rows, labels = trained
    header = "<|start_header_id|>"
    tok = make_tokenizer("bpe", "llama3")
    assert tok.decode(rows[0]).startswith("<|begin_of_text|>" + header + "system")  # not ChatML
    proc, url = start_server(
        [run, "--served_model_name", "m", "--max_new_tokens", "4"], tmp_path / "serve.log"
    )
    try:
        for conv, row, lab in zip(CONVS, rows, labels):
            for i, m in enumerate(conv):
                if m["role"] != "assistant":
                    continue
                body = {"model": "m", "messages": conv[:i], "max_tokens": 2, "return_token_ids": True}
                reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
                prompt = reply["prompt_token_ids"]
                assert row[: len(prompt)] == prompt  # the served prompt starts the training row
                assert lab[len(prompt) - 1] == -100 and lab[len(prompt)] != -100  # answer trained from here
        from lmforge.models.load import load_tokenizer_for

        assert header in load_tokenizer_for(run).chat_template  # the template travelled with the run
    finally:
        stop_server(proc)
