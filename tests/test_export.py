"""`lmforge export`: GGUF files reload with transformers' GGUF loader and decode the same greedy
tokens as the source model; the Ollama Modelfile's Go template renders exactly the Jinja chat
template; HF export merges adapters; quantised formats and --push_to_hub fail in one clear line
where they cannot run (no GPU, no network)."""

import re

import pytest
import torch

from lmforge.cli import main

pytest.importorskip("gguf", reason="GGUF export needs the gguf package (pip install 'lmforge[export]')")


def _save_fp16_exact(model, tokenizer, out):
    """Round weights to fp16-representable values so an f16 GGUF holds exactly the source weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tokenizer, tmp_path_factory):
    from lmforge.models.scratch import init_model

    root = tmp_path_factory.mktemp("src")
    qwen3 = init_model(tokenizer, preset="tiny", seed=0)  # head_dim 16
    llama = init_model(
        tokenizer,
        arch="llama",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=192,
        seed=1,
    )
    return {
        "qwen3": _save_fp16_exact(qwen3, tokenizer, root / "qwen3"),
        "llama": _save_fp16_exact(llama, tokenizer, root / "llama"),
    }


def _load_gguf(folder):
    """transformers' GGUF loader. It does not read `qwen3.attention.key_length` (Qwen3Config then
    defaults head_dim to 128), so the head size is taken from the file with the gguf reader."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = folder / "model.gguf"
    config = AutoConfig.from_pretrained(folder, gguf_file="model.gguf")
    if config.model_type == "qwen3":
        field = GGUFReader(path).fields["qwen3.attention.key_length"]
        config.head_dim = int(field.parts[field.data[0]][0])
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="model.gguf", config=config, dtype=torch.float32
    )
    return model.eval(), AutoTokenizer.from_pretrained(folder, gguf_file="model.gguf")


def _greedy(model, ids, n=16):
    from transformers import GenerationConfig

    gen = GenerationConfig(
        do_sample=False, max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0
    )
    with torch.no_grad():
        return model.generate(ids, generation_config=gen)[0, ids.shape[1] :].tolist()


TEXTS = ["The capital of France is Paris.\n\nHi  there \n x", "日本的首都是东京。<|im_start|>user\n<think>hi"]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_gguf_f16_reloads_with_same_greedy_tokens(arch, models, tokenizer, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "gguf"
    assert main(["export", str(models[arch]), "--output_dir", str(out), "--format", "gguf"]) == 0
    assert {p.name for p in out.iterdir()} >= {"model.gguf", "Modelfile", "README.md"}
    src = AutoModelForCausalLM.from_pretrained(models[arch], dtype=torch.float32).eval()
    got, gguf_tok = _load_gguf(out)
    assert type(got).__name__ == type(src).__name__
    for text in TEXTS:  # the tokenizer rebuilt from GGUF metadata encodes like the source tokenizer
        assert gguf_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert gguf_tok.chat_template == tokenizer.chat_template
    assert gguf_tok.eos_token == "<|im_end|>" and gguf_tok.pad_token == "<|endoftext|>"

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(got(ids).logits, src(ids).logits, atol=1e-4, rtol=0)
    assert _greedy(got, ids) == _greedy(src, ids)


def test_gguf_q8_0_is_smaller_and_close(models, tokenizer, tmp_path, one_thread):
    from gguf import GGMLQuantizationType, GGUFReader
    from transformers import AutoModelForCausalLM

    f16, q8 = tmp_path / "f16", tmp_path / "q8"
    assert main(["export", str(models["llama"]), "--output_dir", str(f16), "--format", "gguf"]) == 0
    argv = [
        "export",
        str(models["llama"]),
        "--output_dir",
        str(q8),
        "--format",
        "gguf",
        "--gguf_type",
        "q8_0",
    ]
    assert main(argv) == 0
    types = {t.name: t.tensor_type for t in GGUFReader(q8 / "model.gguf").tensors}
    assert types["token_embd.weight"] == GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    assert "output.weight" not in types  # tied embedding: llama.cpp reuses token_embd
    assert (q8 / "model.gguf").stat().st_size < 0.7 * (f16 / "model.gguf").stat().st_size

    src = AutoModelForCausalLM.from_pretrained(models["llama"], dtype=torch.float32).eval()
    got, _ = _load_gguf(q8)
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        want, have = src(ids).logits, got(ids).logits
    err = (have - want).abs().max()
    assert 0 < err < 0.05 * want.std()  # quantised (not bit-equal), yet close
    assert _greedy(got, ids, n=8) == _greedy(src, ids, n=8)


# --- the Go-template subset the Modelfile uses: variables, range, if/else, eq/ne/and ----------------
def _go_render(template, messages):
    parts = re.split(r"(\{\{.*?\}\})", template)
    pos = 0

    def parse(stop):
        nonlocal pos
        nodes = []
        while pos < len(parts):
            part = parts[pos]
            pos += 1
            if not part.startswith("{{"):
                nodes.append(("text", part))
                continue
            action = part[2:-2].strip()
            if action in stop:
                return nodes, action
            if action.startswith(("range ", "if ")):
                word, expr = action.split(" ", 1)
                body, ended = parse(("end", "else"))
                other = parse(("end",))[0] if ended == "else" else []
                nodes.append((word, expr, body, other))
            else:
                nodes.append(("action", action))
        return nodes, None

    def value(tokens, env, dot):
        tok = tokens.pop(0)
        if tok == "(":
            v = call(tokens, env, dot)
            assert tokens.pop(0) == ")"
            return v
        if tok.startswith('"'):
            return tok[1:-1]
        if tok.startswith("$"):
            return env[tok]
        return dot[tok[1:].lower()] if tok != ".Messages" else messages

    def call(tokens, env, dot):
        if tokens[0] in ("eq", "ne", "and"):
            fn = tokens.pop(0)
            a, b = value(tokens, env, dot), value(tokens, env, dot)
            return {"eq": a == b, "ne": a != b, "and": bool(a) and bool(b)}[fn]
        return value(tokens, env, dot)

    def run(nodes, env, dot):
        out = ""
        for node in nodes:
            if node[0] == "text":
                out += node[1]
            elif node[0] == "range":
                for item in call(re.findall(r'\(|\)|"[^"]*"|[^\s()]+', node[1]), env, dot):
                    out += run(node[2], env, item)
            elif node[0] == "if":
                cond = call(re.findall(r'\(|\)|"[^"]*"|[^\s()]+', node[1]), env, dot)
                out += run(node[2] if cond else node[3], env, dot)
            elif m := re.fullmatch(r"(\$\w+) :?= (.+)", node[1]):
                env[m.group(1)] = call(re.findall(r'\(|\)|"[^"]*"|[^\s()]+', m.group(2)), env, dot)
            else:
                out += str(call(re.findall(r'\(|\)|"[^"]*"|[^\s()]+', node[1]), env, dot))
        return out

    return run(parse(())[0], {}, {})


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?\nThink."},
    ],
    [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "tool", "content": '{"Paris": "sun"}'},
        {"role": "tool", "content": '{"Rome": "rain"}'},
        {"role": "assistant", "content": "Sun in Paris, rain in Rome."},
        {"role": "user", "content": "Thanks"},
    ],
    [{"role": "user", "content": "Look it up"}, {"role": "tool", "content": "42"}],
]


def test_modelfile_template_renders_like_the_chat_template(models, tokenizer, tmp_path):
    out = tmp_path / "gguf"
    argv = [
        "export",
        str(models["qwen3"]),
        "--output_dir",
        str(out),
        "--format",
        "gguf",
        "--system",
        "Be brief.",
    ]
    assert main(argv) == 0
    text = (out / "Modelfile").read_text(encoding="utf-8")
    assert text.splitlines()[1] == "FROM ./model.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in text and 'SYSTEM """Be brief."""' in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    for messages in CONVERSATIONS:
        want = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert _go_render(template, messages) == want


def test_hf_export_merges_the_adapter(models, tokenizer, tmp_path, one_thread):
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(models["qwen3"]), LoraConfig(r=4, target_modules="all-linear")
    )
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p += 0.05 * torch.randn_like(p)
    peft_model.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "hf"
    argv = ["export", str(models["qwen3"]), "--adapter", str(tmp_path / "adapter"), "--output_dir", str(out)]
    assert main(argv) == 0
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in merged.named_modules())
    ids = torch.tensor([tokenizer("The quick brown fox")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model.eval()(ids).logits, atol=1e-5, rtol=0)
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template
    gen = json.loads((out / "generation_config.json").read_text())
    assert tokenizer.eos_token_id in (
        gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    )
    assert (out / "lmforge_finished.json").is_file() and not list(tmp_path.glob("*.tmp-*"))
    # the adapter folder alone: its base comes from adapter_config.json
    assert main(["export", str(tmp_path / "adapter"), "--output_dir", str(tmp_path / "hf2")]) == 0
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "hf2").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, merged(ids).logits, atol=1e-6, rtol=0)


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "%|" not in ln]  # bars aside
    assert len(err) == 1 and err[0].startswith("lmforge: error:"), err
    return err[0]


def test_unavailable_formats_and_bad_outputs_are_one_line_errors(models, tmp_path, capsys, monkeypatch):
    src, out = str(models["qwen3"]), str(tmp_path / "o")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for fmt in ("gptq", "awq", "bnb"):
        err = _one_line_error(capsys, ["export", src, "--output_dir", out, "--format", fmt])
        assert f"--format {fmt}" in err and "GPU" in err and "gguf" in err
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("x")
    err = _one_line_error(capsys, ["export", src, "--output_dir", str(tmp_path / "keep")])
    assert "not empty" in err and (tmp_path / "keep" / "mine.txt").exists()
    err = _one_line_error(capsys, ["export", str(tmp_path / "nowhere"), "--output_dir", out])
    assert "nowhere" in err
    assert not (tmp_path / "o").exists()


def test_gguf_refuses_moe_models(tokenizer, tmp_path, capsys):
    from lmforge.models.scratch import init_model

    init_model(tokenizer, preset="tiny", use_moe=True, arch="qwen3_moe", num_experts=2).save_pretrained(
        tmp_path / "moe"
    )
    tokenizer.save_pretrained(tmp_path / "moe")
    err = _one_line_error(
        capsys, ["export", str(tmp_path / "moe"), "--output_dir", str(tmp_path / "o"), "--format", "gguf"]
    )
    assert "qwen3_moe" in err and "--format hf" in err


def test_push_to_hub_fails_clearly_when_offline(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    out = tmp_path / "hf"
    argv = [
        "export",
        str(models["qwen3"]),
        "--output_dir",
        str(out),
        "--push_to_hub",
        "me/model",
        "--hub_token",
        "x",
    ]
    err = _one_line_error(capsys, argv)
    assert "--push_to_hub me/model" in err and str(out) in err
    assert (out / "model.safetensors").is_file()  # the export itself is complete
