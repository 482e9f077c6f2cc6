"""`lmforge export`: GGUF files reload with transformers' GGUF loader and decode the same greedy
tokens as the source model; the Ollama Modelfile's Go template renders exactly the Jinja chat
template; HF export merges adapters; quantised formats and --push_to_hub fail in one clear line
where they cannot run (no GPU, no network)."""

import re

import pytest
import torch

from lmforge.cli import main
from tests.go_template import render as go_render

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


def _load_gguf(folder, **kwargs):
    """transformers' own GGUF loader, as a user calls it (no config patched in)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="model.gguf", dtype=torch.float32, **kwargs
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


FOUR_TURNS = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?\nThink."},
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
    assert "FROM ./model.gguf" in text.splitlines() and "# Chat template: chatml" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'SYSTEM """Be brief."""' in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    for messages in CONVERSATIONS:
        want = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert go_render(template, messages) == want


def _family_tokenizer(name):
    from lmforge.data.chat_templates import TEMPLATES
    from tests.chat_tokenizers import make_tokenizer

    return make_tokenizer("bpe", name, TEMPLATES[name])


def test_every_template_family_renders_the_same_prompt_in_go(tokenizer):
    """For every --template name, the Modelfile's Go template renders what lmforge's renderer
    (the model's Jinja template, the system folded in for Gemma) renders."""
    from lmforge.data.chat import render
    from lmforge.data.chat_templates import TEMPLATES
    from lmforge.errors import LmforgeError
    from lmforge.export.ollama import modelfile, stop_tokens

    checked = 0
    for name in TEMPLATES:
        tok = _family_tokenizer(name)
        for add_bos in (False, True):
            text = modelfile(tok, "model.gguf", add_bos=add_bos)
            named = re.search(r"# Chat template: (\S+)", text).group(1)
            assert TEMPLATES[named] == TEMPLATES[name]  # qwen2_5 is another name of qwen
            template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
            for messages in [FOUR_TURNS, *CONVERSATIONS]:
                try:
                    want = render(tok, messages, add_generation_prompt=True)
                except LmforgeError:  # the family has no tool format: nothing to carry over
                    assert messages is not FOUR_TURNS
                    continue
                # a BOS the Jinja template writes is the one llama.cpp adds itself when add_bos_token is set
                prefix = tok.bos_token if add_bos and tok.bos_token and want.startswith(tok.bos_token) else ""
                assert prefix + go_render(template, messages) == want, (name, add_bos, messages)
                checked += 1
        stops = stop_tokens(name, tok)
        assert tok.eos_token in stops and all(f'PARAMETER stop "{t}"' in text for t in stops)
    assert checked >= 2 * len(TEMPLATES) + 12  # the four-turn prompt for every family, tool turns for some
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile(_family_tokenizer("llama3"), "m.gguf", add_bos=True)


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


def test_gguf_moe_exports_and_refuses_what_llama_cpp_cannot_run(tokenizer, tmp_path, capsys, one_thread):
    from gguf import GGUFReader

    from lmforge.models.scratch import init_model

    sizes = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    moe = init_model(tokenizer, arch="qwen3_moe", intermediate_size=64, num_experts=4, **sizes)
    _save_fp16_exact(moe, tokenizer, tmp_path / "moe")
    assert (
        main(["export", str(tmp_path / "moe"), "--output_dir", str(tmp_path / "g"), "--format", "gguf"]) == 0
    )
    reader = GGUFReader(tmp_path / "g" / "model.gguf")
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    assert shapes["blk.0.ffn_gate_exps.weight"] == (64, 64, 4)  # GGUF order: n_embd, n_ff_exp, n_expert
    # transformers' GGUF reader has no key for moe_intermediate_size: the run's config goes along
    got, _ = _load_gguf(tmp_path / "g", config=moe.config)
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(got(ids).logits, moe.eval()(ids).logits, atol=1e-4, rtol=0)
    # a Qwen2-MoE that renormalises top-k weights (minimind2-moe) is not what llama.cpp's qwen2moe runs
    init_model(tokenizer, preset="minimind2-moe", num_hidden_layers=1).save_pretrained(tmp_path / "q2")
    tokenizer.save_pretrained(tmp_path / "q2")
    err = _one_line_error(
        capsys, ["export", str(tmp_path / "q2"), "--output_dir", str(tmp_path / "o"), "--format", "gguf"]
    )
    assert "norm_topk_prob" in err and "--format hf" in err and not (tmp_path / "o").exists()


def test_every_dense_preset_gguf_loads_in_plain_transformers(tokenizer, tmp_path, one_thread):
    """Each dense preset's shapes (hidden size, heads, head_dim) with one layer: `from_pretrained(dir,
    gguf_file=...)` with nothing patched builds the same model (the MoE presets: see the test above)."""
    from lmforge.export.gguf_file import write_gguf
    from lmforge.models.scratch import init_model

    ids = torch.tensor([tokenizer("Hello, how are you?")["input_ids"]])
    for preset in ("tiny", "minimind2-small", "minimind2", "minimind3"):
        src = init_model(tokenizer, preset=preset, num_hidden_layers=1, seed=5).eval()
        (tmp_path / preset).mkdir()  # the GGUF alone: no config.json to fall back on
        with torch.no_grad():
            for p in src.parameters():
                p.copy_(p.half().float())
        write_gguf(src, tokenizer, tmp_path / preset / "model.gguf", "f16", preset)
        got, _ = _load_gguf(tmp_path / preset)
        assert got.config.head_dim == src.config.head_dim, preset
        with torch.no_grad():
            torch.testing.assert_close(got(ids).logits, src(ids).logits, atol=1e-4, rtol=0)


def test_pre_tokenizer_labels_and_refusals(tokenizer):
    import json

    from tokenizers import Regex, pre_tokenizers

    from lmforge.errors import LmforgeError
    from lmforge.export.gguf_file import pre_tokenizer_name
    from tests.chat_tokenizers import LLAMA3_SPLIT, QWEN2_SPLIT

    def name(pre, merges=()):
        return pre_tokenizer_name(
            json.loads(pre.__getstate__()) if not isinstance(pre, dict) else pre, list(merges)
        )

    shipped = json.loads(tokenizer.backend_tokenizer.to_str())["pre_tokenizer"]
    assert name(shipped) == "gpt-2"  # lmforge's: "\n" isolated, then GPT-2's regex
    with pytest.raises(LmforgeError, match="merges joining"):
        name(shipped, ["Ċ Ċ"])  # a vocabulary that merges newlines would tokenise differently
    assert name(pre_tokenizers.ByteLevel(add_prefix_space=False)) == "gpt-2"
    for regex, label in ((LLAMA3_SPLIT, "llama-bpe"), (QWEN2_SPLIT, "qwen2")):
        split = pre_tokenizers.Split(Regex(regex), behavior="isolated")
        seq = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        assert name(seq) == label
    digits = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel()]
    )
    with pytest.raises(LmforgeError, match="no pre-tokenizer"):
        name(digits)


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
