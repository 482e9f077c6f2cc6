"""`lmforge import minimind`: MiniMind-layout state dicts (key names and shapes from
reference/minimind_facts.md, random values) become HF folders whose logits equal a reference
forward written here from the MiniMind architecture description, for all four families."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.cli import main

VOCAB, HIDDEN, LAYERS = 2304, 64, 2


# --------------------------------------------------------------------------- MiniMind checkpoints
def minimind_state_dict(family, *, heads, kv, experts=4, shared=1, tied=True, seed=0):
    """A MiniMind state dict with MiniMind's key names; weights random and large enough that every
    path (norm weights, routing, shared experts) changes the output."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=None):
        return torch.randn(*shape, generator=g) * (scale or 1 / math.sqrt(shape[-1]))

    def norm(n):
        return 1 + 0.2 * torch.randn(n, generator=g)

    hd = HIDDEN // heads
    inter = 64 * math.ceil(HIDDEN * (math.pi if family.startswith("minimind3") else 8 / 3) / 64)
    sd = {"model.embed_tokens.weight": rnd(VOCAB, HIDDEN, scale=1.0), "model.norm.weight": norm(HIDDEN)}
    for n in range(LAYERS):
        p = f"model.layers.{n}"
        sd[f"{p}.self_attn.q_proj.weight"] = rnd(heads * hd, HIDDEN)
        sd[f"{p}.self_attn.k_proj.weight"] = rnd(kv * hd, HIDDEN)
        sd[f"{p}.self_attn.v_proj.weight"] = rnd(kv * hd, HIDDEN)
        sd[f"{p}.self_attn.o_proj.weight"] = rnd(HIDDEN, heads * hd)
        sd[f"{p}.input_layernorm.weight"] = norm(HIDDEN)
        sd[f"{p}.post_attention_layernorm.weight"] = norm(HIDDEN)
        if family.startswith("minimind3"):
            sd[f"{p}.self_attn.q_norm.weight"] = norm(hd)
            sd[f"{p}.self_attn.k_norm.weight"] = norm(hd)
        mlps = [f"{p}.mlp"]
        if family.endswith("moe"):
            sd[f"{p}.mlp.gate.weight"] = rnd(experts, HIDDEN, scale=1.0)
            mlps = [f"{p}.mlp.experts.{e}" for e in range(experts)]
            if family == "minimind2-moe":
                mlps += [f"{p}.mlp.shared_experts.{e}" for e in range(shared)]
        for m in mlps:
            sd[f"{m}.gate_proj.weight"] = rnd(inter, HIDDEN)
            sd[f"{m}.up_proj.weight"] = rnd(inter, HIDDEN)
            sd[f"{m}.down_proj.weight"] = rnd(HIDDEN, inter)
    # MiniMind stores the tied weight twice.
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone() if tied else rnd(VOCAB, HIDDEN)
    return sd


# ------------------------------------------------------------------------------ reference forward
def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotary(x, theta):
    """MiniMind's RoPE: frequencies theta^(-2i/d), cos/sin repeated over both halves, rotate-half."""
    t, d = x.shape[1], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    ang = torch.outer(torch.arange(t).float(), inv)  # (T, d/2)
    cos = torch.cat([ang.cos(), ang.cos()], -1)[None, :, None]  # (1, T, 1, d)
    sin = torch.cat([ang.sin(), ang.sin()], -1)[None, :, None]
    rotated = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rotated * sin


def attention(x, sd, p, heads, kv, qk_norm, eps, theta):
    b, t, _ = x.shape
    q = (x @ sd[f"{p}.q_proj.weight"].T).view(b, t, heads, -1)  # (B, T, H, hd)
    k = (x @ sd[f"{p}.k_proj.weight"].T).view(b, t, kv, -1)
    v = (x @ sd[f"{p}.v_proj.weight"].T).view(b, t, kv, -1)
    if qk_norm:  # minimind-3: RMSNorm over each head's vector before RoPE
        q, k = rms_norm(q, sd[f"{p}.q_norm.weight"], eps), rms_norm(k, sd[f"{p}.k_norm.weight"], eps)
    q, k = rotary(q, theta), rotary(k, theta)
    k, v = k.repeat_interleave(heads // kv, dim=2), v.repeat_interleave(heads // kv, dim=2)  # GQA
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, t, -1)
    return out @ sd[f"{p}.o_proj.weight"].T


def swiglu(x, sd, p):
    return (F.silu(x @ sd[f"{p}.gate_proj.weight"].T) * (x @ sd[f"{p}.up_proj.weight"].T)) @ sd[
        f"{p}.down_proj.weight"
    ].T


def moe(x, sd, p, top_k, renorm, shared):
    """Softmax router, top-k experts weighted by their (optionally renormalised) probabilities, token
    by token; MiniMind2's shared experts are added ungated."""
    flat = x.reshape(-1, x.shape[-1])
    probs = (flat @ sd[f"{p}.gate.weight"].T).softmax(-1)
    weights, idx = probs.topk(top_k, dim=-1)
    if renorm:
        weights = weights / weights.sum(-1, keepdim=True)
    y = torch.zeros_like(flat)
    for tok in range(flat.shape[0]):
        for j in range(top_k):
            y[tok] += weights[tok, j] * swiglu(flat[tok], sd, f"{p}.experts.{int(idx[tok, j])}")
    for e in range(shared):
        y = y + swiglu(flat, sd, f"{p}.shared_experts.{e}")
    return y.view_as(x)


def reference_logits(sd, ids, family, heads, kv, top_k=None, shared=0, theta=1e6):
    v3 = family.startswith("minimind3")
    eps = 1e-6 if v3 else 1e-5
    renorm = True if v3 else top_k is not None and top_k > 1  # MiniMind2 renormalises only for k > 1
    h = sd["model.embed_tokens.weight"][ids]
    for n in range(LAYERS):
        p = f"model.layers.{n}"
        h = h + attention(
            rms_norm(h, sd[f"{p}.input_layernorm.weight"], eps),
            sd,
            f"{p}.self_attn",
            heads,
            kv,
            v3,
            eps,
            theta,
        )
        x = rms_norm(h, sd[f"{p}.post_attention_layernorm.weight"], eps)
        h = h + (moe(x, sd, f"{p}.mlp", top_k, renorm, shared) if top_k else swiglu(x, sd, f"{p}.mlp"))
    return rms_norm(h, sd["model.norm.weight"], eps) @ sd["lm_head.weight"].T


# ------------------------------------------------------------------------------------------ tests
CASES = {
    # family, heads, kv, experts per token (None: dense), shared experts, tied, extra flags
    "minimind2": ("minimind2", 8, 2, None, 0, True, []),
    "minimind2-heads4-untied": ("minimind2", 4, 2, None, 0, False, ["--num_attention_heads", "4"]),
    "minimind2-moe": ("minimind2-moe", 8, 2, 2, 1, True, []),
    "minimind2-moe-2shared-top1": ("minimind2-moe", 8, 2, 1, 2, False, ["--num_experts_per_tok", "1"]),
    "minimind3": ("minimind3", 4, 2, None, 0, True, []),
    "minimind3-moe": ("minimind3-moe", 4, 2, 1, 0, True, []),
    "minimind3-moe-top2": ("minimind3-moe", 4, 1, 2, 0, True, ["--num_experts_per_tok", "2"]),
}
ARCH = {
    "minimind2": "LlamaForCausalLM",
    "minimind2-moe": "Qwen2MoeForCausalLM",
    "minimind3": "Qwen3ForCausalLM",
    "minimind3-moe": "Qwen3MoeForCausalLM",
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_logits_equal_reference_forward(case, tmp_path, capsys, one_thread):
    from transformers import AutoModelForCausalLM

    family, heads, kv, top_k, shared, tied, flags = CASES[case]
    sd = minimind_state_dict(family, heads=heads, kv=kv, shared=max(shared, 1), tied=tied)
    sd = {k: v for k, v in sd.items() if ".shared_experts." not in k or int(k.split(".")[5]) < shared}
    pth = tmp_path / "full_sft_64.pth"
    torch.save(sd, pth)
    out = tmp_path / "hf"
    assert main(["import", "minimind", str(pth), "--output_dir", str(out), *flags]) == 0
    assert str(out) in capsys.readouterr().out and not list(tmp_path.glob("*.tmp-*"))

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == ARCH[family]
    assert model.config.tie_word_embeddings == tied
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(ids).logits
        want = reference_logits(sd, ids, family, heads, kv, top_k, shared)
    assert want.abs().max() > 1.0  # a real signal, not all zeros
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    if top_k:  # the router sends these tokens to several different experts
        choice = (sd["model.embed_tokens.weight"][ids] @ sd["model.layers.0.mlp.gate.weight"].T).argmax(-1)
        assert len(set(choice.flatten().tolist())) >= 2


def test_fp16_checkpoint_keeps_fp16_and_generates_with_engine(tmp_path, tokenizer, one_thread):
    """MiniMind saves fp16: the folder keeps fp16 weights; Engine greedy output follows the reference."""
    import json

    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.engine import Engine

    sd = {k: v.half() for k, v in minimind_state_dict("minimind3", heads=4, kv=2).items()}
    torch.save(sd, tmp_path / "m.pth")
    out = tmp_path / "hf"
    assert main(["import", "minimind", str(tmp_path / "m.pth"), "--output_dir", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert (out / "tokenizer_config.json").is_file() and (out / "lmforge_finished.json").is_file()

    engine = Engine.from_path(str(out), dtype="float32")
    gen = GenerationArgs(max_new_tokens=6, do_sample=False)
    done = engine.complete("The capital of France is", gen)
    prompt = engine.encode("The capital of France is", gen)
    assert done.completion_tokens >= 1 and done.token_ids
    ids = list(prompt)
    sd32 = {k: v.float() for k, v in sd.items()}
    for token in done.token_ids:  # every greedy step is the reference's argmax
        with torch.no_grad():
            logits = reference_logits(sd32, torch.tensor([ids]), "minimind3", 4, 2)
        assert int(logits[0, -1].argmax()) == token
        ids.append(token)


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # info lines ("[lmforge] assuming ...") may precede it; the error itself is one line, no traceback
    err = [line for line in lines if line.startswith("lmforge: error:")]
    assert len(err) == 1 and not any("Traceback" in line for line in lines), lines
    return err[0]


def test_unknown_layouts_are_one_line_errors(tmp_path, capsys):
    sd = minimind_state_dict("minimind2", heads=8, kv=2)
    out = str(tmp_path / "o")

    def attempt(state, *flags):
        torch.save(state, tmp_path / "x.pth")
        return _one_line_error(
            capsys, ["import", "minimind", str(tmp_path / "x.pth"), "--output_dir", out, *flags]
        )

    bad = dict(sd, **{"model.layers.1.self_attn.v_proj.weight": torch.zeros(3, HIDDEN)})
    err = attempt(bad)
    assert "model.layers.1.self_attn.v_proj.weight" in err and "(3, 64)" in err and "(16, 64)" in err
    err = attempt({k: v for k, v in sd.items() if k != "model.layers.0.mlp.up_proj.weight"})
    assert (
        "missing model.layers.0.mlp.up_proj.weight" in err and "(172" not in err and "expected shape" in err
    )
    err = attempt(dict(sd, **{"model.layers.0.mlp.extra.weight": torch.zeros(2)}))
    assert "unexpected key model.layers.0.mlp.extra.weight" in err
    err = attempt({"tok_embeddings.weight": torch.zeros(4, 4)})
    assert "MiniMind v1" in err
    err = attempt(sd, "--family", "minimind3")
    assert "model.layers.0.self_attn.q_norm.weight" in err
    err = attempt(sd, "--hidden_size", "768")
    assert "768" in err and "64" in err
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    err = _one_line_error(capsys, ["import", "minimind", str(tmp_path / "junk.pth"), "--output_dir", out])
    assert "junk.pth" in err
    err = _one_line_error(capsys, ["import", "minimind", str(tmp_path / "none.pth"), "--output_dir", out])
    assert "not found" in err
    assert not (tmp_path / "o").exists()


def test_output_dir_refused_unless_overwrite(tmp_path, capsys):
    torch.save(minimind_state_dict("minimind2", heads=8, kv=2), tmp_path / "m.pth")
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["import", "minimind", str(tmp_path / "m.pth"), "--output_dir", str(out)]
    assert "not empty" in _one_line_error(capsys, argv)
    assert (out / "keep.txt").read_text() == "mine"
    assert main([*argv, "--overwrite", "true", "--dtype", "bfloat16"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
