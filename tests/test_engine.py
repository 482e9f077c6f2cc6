"""Engine: greedy determinism (single ≡ batch ≡ stream), stop strings, finish reasons, `<think>`
splitting, context errors, YaRN inference scaling, loading from folders / runs / LoRA adapters.

A tiny Qwen3 (scratch preset "tiny") is trained for 100 steps on two chats so greedy output is a
known sentence; the tokenizer is a small one trained here by lmforge's own tokenizer code.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.infer.args import GenerationArgs  # noqa: E402
from lmforge.infer.engine import ChatDeltas, Engine, split_thinking  # noqa: E402

CONVS = [
    ("hi", "say hello", "hello world, this is lmforge."),
    ("fox", "an old sentence", "the quick brown fox jumps over the lazy dog."),
]


def build_trained(tmp_dir):
    """(model, tokenizer): tiny model that answers CONVS' users with their reasoning + answer."""
    from lmforge.data.template import render_chat
    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer, train_tokenizer

    corpus = tmp_dir / "corpus.txt"
    lines = [f"{u}\n{r}\n{a}" for u, r, a in CONVS] + ["system user assistant tokens long prompt words"]
    corpus.write_text("\n".join(lines * 20), encoding="utf-8")
    tok = load_tokenizer(
        train_tokenizer([str(corpus)], str(tmp_dir / "tok"), vocab_size=300, min_frequency=1)
    )
    model = init_model(tok, preset="tiny", seed=0)
    texts = [
        render_chat(
            [{"role": "user", "content": u}, {"role": "assistant", "content": a, "reasoning_content": r}]
        )
        for u, r, a in CONVS
    ]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, ids))
    x = torch.full((len(ids), width), tok.pad_token_id)
    labels = torch.full((len(ids), width), -100)
    mask = torch.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, : len(s)], labels[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), torch.tensor(s), 1
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):
        model(input_ids=x, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model, tok


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return build_trained(tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="module")
def engine(trained):
    return Engine(*trained)


@pytest.fixture(scope="module")
def saved_dir(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("saved") / "model"
    trained[0].save_pretrained(out)
    trained[1].save_pretrained(out)
    return out


GREEDY = GenerationArgs(temperature=0, max_new_tokens=64)


def user(text):
    return [{"role": "user", "content": text}]


def test_greedy_answer_and_think_split(engine):
    for u, r, a in CONVS:
        c = engine.chat(user(u), GREEDY)
        assert (c.text, c.reasoning_content, c.finish_reason) == (a, r, "stop")
        assert c.raw_text.startswith("<think>") and c.raw_text.endswith(a)
        assert c.prompt_tokens == len(engine.encode(user(u), GREEDY))
        assert c.usage["total_tokens"] == c.prompt_tokens + c.completion_tokens


def test_batch_equals_single_in_input_order(engine):
    prompts = [
        user("hi"),
        user("the quick brown fox jumps over a long prompt words"),
        user("fox"),
        [{"role": "system", "content": "system words"}, *user("assistant tokens")],
        user("x"),
    ]
    gen = GenerationArgs(temperature=0, max_new_tokens=24)
    single = [engine.chat(p, gen) for p in prompts]
    for bs in (2, 8):
        batch = engine.generate_batch(prompts, gen, batch_size=bs)
        assert [c.token_ids for c in batch] == [c.token_ids for c in single]
        assert [c.raw_text for c in batch] == [c.raw_text for c in single]
    assert engine.chat(prompts[1], gen).token_ids == single[1].token_ids  # deterministic
    assert len({c.raw_text for c in single}) > 2  # rows really differ, so order is checked


def _plain_generate(engine, messages, **kwargs) -> list[int]:
    """transformers' own `generate` on the engine's model, cut after its first end-of-answer token."""
    ids = torch.tensor([engine.encode(messages, GREEDY)])
    with torch.no_grad():
        out = engine.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            eos_token_id=engine.eos_ids,
            pad_token_id=engine.pad_id,
            **kwargs,
        )[0, ids.shape[1] :].tolist()
    ends = [i for i, t in enumerate(out) if t in engine.eos_ids]
    return out[: ends[0] + 1] if ends else out


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_equals_plain_transformers_generate(engine, penalty):
    """The decode loop (batched, left-padded, KV cache joined per row) gives transformers' greedy tokens,
    with its repetition penalty too."""
    prompts = [user(u) for u, _, _ in CONVS] + [user("the quick brown fox jumps over"), user("x")]
    gen = GenerationArgs(temperature=0, max_new_tokens=20, repetition_penalty=penalty)
    ours = [c.token_ids for c in engine.generate_batch(prompts, gen, batch_size=4)]
    theirs = [
        _plain_generate(engine, p, do_sample=False, max_new_tokens=20, repetition_penalty=penalty)
        for p in prompts
    ]
    assert ours == theirs
    assert len({tuple(t) for t in theirs}) > 2


def test_seeded_sampling_does_not_depend_on_the_batch(engine):
    """Row i samples with --seed + i: the same answers one by one and batched; another seed differs."""
    prompts = [user("hi"), user("fox"), user("the quick brown fox")]
    gen = GenerationArgs(temperature=1.5, top_k=0, top_p=1.0, seed=11, max_new_tokens=16)
    batched = [c.token_ids for c in engine.generate_batch(prompts, gen, batch_size=3)]
    alone = [engine.generate_batch(prompts, gen, batch_size=1)[i].token_ids for i in range(3)]
    assert batched == alone
    other = [
        c.token_ids for c in engine.generate_batch(prompts, GenerationArgs(**{**gen.__dict__, "seed": 12}))
    ]
    assert other != batched


def test_stream_concatenation_equals_chat(engine):
    for u, _, _ in CONVS:
        whole = engine.chat(user(u), GREEDY)
        stream = engine.stream(user(u), GREEDY)
        pieces = list(stream)
        assert len(pieces) > 3
        assert "".join(pieces) == whole.raw_text
        assert stream.completion.finish_reason == "stop"
        assert stream.completion.token_ids == whole.token_ids


def test_stop_strings(engine):
    gen = GenerationArgs(temperature=0, max_new_tokens=64, stop=["brown"])
    c = engine.chat(user("fox"), gen)
    assert c.text == "the quick " and c.finish_reason == "stop"
    # generation itself stopped early, not just the text
    assert c.completion_tokens < engine.chat(user("fox"), GREEDY).completion_tokens
    stream = engine.stream(user("fox"), gen)
    assert "".join(stream) == c.raw_text and stream.finish_reason == "stop"
    batch = engine.generate_batch([user("hi"), user("fox")], gen)
    assert batch[0].text == CONVS[0][2] and batch[1].text == "the quick "


def test_finish_reason_length(engine):
    gen = GenerationArgs(temperature=0, max_new_tokens=3)
    c = engine.chat(user("hi"), gen)
    assert c.finish_reason == "length" and c.completion_tokens == 3
    stream = engine.stream(user("hi"), gen)
    assert "".join(stream) == c.raw_text and stream.finish_reason == "length"


def test_split_thinking_forms():
    assert split_thinking("<think>\nr\n</think>\n\nanswer") == ("r", "answer")
    assert split_thinking("r</think>\n\nanswer") == ("r", "answer")  # template opened the tag
    assert split_thinking("plain") == (None, "plain")
    assert split_thinking("<think>\nstill thinking") == ("still thinking", "")
    s = ChatDeltas()  # the incremental split: the same parts, tags split across pieces
    out = [x for piece in ["<thi", "nk>\nab", "c</th", "ink>\n\nans", "wer"] for x in s.feed(piece)]
    out += s.feed("", final=True)
    reasoning = "".join(d.get("reasoning_content", "") for d in out)
    content = "".join(d.get("content", "") for d in out)
    assert (reasoning, content) == ("abc", "answer") == split_thinking("<think>\nabc</think>\n\nanswer")


def test_enable_thinking_false_renders_empty_think(engine):
    text = engine.render(user("hi"), GenerationArgs(enable_thinking=False))
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert engine.render(user("hi"), GenerationArgs()).endswith("<|im_start|>assistant\n")


def test_prompt_too_long_is_one_line_error(trained):
    eng = Engine(*trained)
    eng.context_length = 40
    with pytest.raises(LmforgeError, match=r"prompt has \d+ tokens; the model's context of 40") as e:
        eng.chat(user("hi " * 30), GenerationArgs(max_new_tokens=10))
    assert "\n" not in str(e.value)
    with pytest.raises(LmforgeError, match="row 1 has"):
        eng.generate_batch([user("hi"), user("hi " * 30)], GenerationArgs(max_new_tokens=10))


def test_sampling_with_seed_is_reproducible(engine):
    gen = GenerationArgs(temperature=1.5, top_k=0, top_p=1.0, seed=7, max_new_tokens=16)
    a, b = engine.chat(user("hi"), gen), engine.chat(user("hi"), gen)
    assert a.token_ids == b.token_ids


def test_complete_raw_text(engine):
    c = engine.complete("hello world", GenerationArgs(temperature=0, max_new_tokens=8))
    assert c.finish_reason in ("stop", "length") and c.completion_tokens >= 1
    assert c.prompt_tokens == len(engine.tokenizer("hello world", add_special_tokens=False)["input_ids"]) + 1


def test_from_path_generates_same_tokens(engine, saved_dir):
    loaded = Engine.from_path(str(saved_dir), device="cpu")
    assert loaded.device.type == "cpu" and loaded.model.dtype == torch.float32
    prompts = [user("hi"), user("fox"), user("words")]
    assert [c.token_ids for c in loaded.generate_batch(prompts, GREEDY)] == [
        c.token_ids for c in engine.generate_batch(prompts, GREEDY)
    ]


def test_run_folder_defaults(saved_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(saved_dir, run / "checkpoint-5")
    (run / "checkpoint-5" / "trainer_state.json").write_text("{}")  # marks a complete checkpoint
    (run / "lmforge_args.yaml").write_text("system: You are a fox.\nenable_thinking: false\nmax_length: 64\n")
    eng = Engine.from_path(str(run), device="cpu")  # run folder → its newest checkpoint
    assert eng.system == "You are a fox." and eng.run_args["max_length"] == 64
    text = eng.render(user("hi"), GenerationArgs())
    assert text.startswith("<|im_start|>system\nYou are a fox.<|im_end|>") and "<think>\n\n</think>" in text


def test_inference_rope_scaling_sets_yarn(engine, saved_dir):
    eng = Engine.from_path(str(saved_dir), device="cpu", inference_rope_scaling=True)
    rope = eng.model.config.rope_parameters
    assert rope["rope_type"] == "yarn" and rope["factor"] == 16.0
    assert rope["original_max_position_embeddings"] == 2048
    assert (rope["beta_fast"], rope["beta_slow"]) == (32, 1)
    assert eng.context_length >= 32768
    c = eng.chat(user("hi"), GREEDY)
    assert c.completion_tokens > 0 and c.finish_reason in ("stop", "length")
    # the scaling really changes the rotary frequencies
    plain = engine.model.model.rotary_emb.inv_freq
    assert not torch.allclose(eng.model.model.rotary_emb.inv_freq, plain)


def test_lora_adapter_loads(trained, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    base_dir = tmp_path / "base"
    trained[0].save_pretrained(base_dir)
    trained[1].save_pretrained(base_dir)
    peft_model = get_peft_model(
        copy.deepcopy(trained[0]),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    expect = Engine(peft_model.eval(), trained[1]).chat(user("fox"), GREEDY).token_ids
    eng = Engine.from_path(str(base_dir), device="cpu", lora_weight=str(tmp_path / "adapter"))
    assert eng.chat(user("fox"), GREEDY).token_ids == expect
    with pytest.raises(LmforgeError, match="no adapter_config.json"):
        Engine.from_path(str(base_dir), device="cpu", lora_weight=str(tmp_path / "missing"))
