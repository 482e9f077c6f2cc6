"""LLaMA-Pro block expansion: the expanded model is the same function (logits, cached greedy decoding),
the new blocks are where they should be, and `save_pretrained` reloads exactly what is in memory."""

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.models.presets import build_config
from lmforge.models.scratch import init_model
from lmforge.tuners.llama_pro import expand_layers

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(
    hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
)
MOE = dict(num_experts=4, num_experts_per_tok=2)
ARCH_K = [(arch, k) for arch in ("qwen3", "llama", "qwen2_moe", "qwen3_moe") for k in (1, 2)]


def _model(tokenizer, arch: str):
    if arch == "qwen3":
        return init_model(tokenizer, preset="tiny", seed=0).eval()
    return init_model(tokenizer, arch=arch, seed=0, **SMALL, **(MOE if "moe" in arch else {})).eval()


def _sparse_step2_moe():
    """A Qwen3-MoE whose blocks alternate dense / MoE (decoder_sparse_step=2): 0 and 2 are dense."""
    from transformers import AutoModelForCausalLM

    config = build_config(arch="qwen3_moe", vocab_size=512, **SMALL, **MOE)
    config.decoder_sparse_step = 2
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def _ids(seq: int = 12) -> torch.Tensor:
    return torch.randint(0, 500, (2, seq), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch,k", ARCH_K)
def test_expansion_is_identity(tokenizer, arch, k):
    model = _model(tokenizer, arch)
    layers = model.model.layers
    before, n = _logits(model, _ids()), len(layers)
    sources = [{name: p.clone() for name, p in layer.named_parameters()} for layer in layers]
    new = expand_layers(model, k)
    group = n // k
    assert new == [(g + 1) * (group + 1) - 1 for g in range(k)]
    for g, i in enumerate(new):  # a copy of its group's last block, output projections zeroed
        source = sources[(g + 1) * group - 1]
        for name, p in layers[i].named_parameters():
            zeroed = {"o_proj", "down_proj"} & set(name.split("."))
            assert torch.equal(p, torch.zeros_like(p) if zeroed else source[name]), name
    assert len(layers) == n + k == model.config.num_hidden_layers
    assert torch.allclose(_logits(model, _ids()), before, atol=1e-6, rtol=0)
    for pos, layer in enumerate(layers):
        assert all(m.layer_idx == pos for m in layer.modules() if hasattr(m, "layer_idx"))
    assert all(p.requires_grad for i in new for p in layers[i].parameters())
    if getattr(model.config, "layer_types", None) is not None:
        assert len(model.config.layer_types) == len(layers)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2_moe", "qwen3_moe"])
def test_cached_greedy_generation_unchanged(tokenizer, arch):
    """With a KV cache: a copy left with its source's `layer_idx` would share (and double) its cache
    slot; greedy tokens of a random model can survive that, so the step logits are compared too."""
    model = _model(tokenizer, arch)
    ids = _ids(6)[:1]
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=True)
    kw.update(attention_mask=torch.ones_like(ids), output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        before = model.generate(ids, **kw)
        expand_layers(model, 2)
        after = model.generate(ids, **kw)
    assert after.sequences.shape == (1, 14)
    assert torch.equal(before.sequences, after.sequences)
    assert all(
        torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(after.logits, before.logits, strict=True)
    )


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2_moe", "qwen3_moe", "qwen3_moe_sparse_step2"])
def test_save_and_reload(tokenizer, arch, tmp_path):
    from transformers import AutoModelForCausalLM

    model = _sparse_step2_moe() if arch == "qwen3_moe_sparse_step2" else _model(tokenizer, arch)
    new = expand_layers(model, 2)
    torch.manual_seed(1)
    with torch.no_grad():
        for i in new:
            for p in model.model.layers[i].parameters():
                p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert loaded.config.num_hidden_layers == len(model.model.layers)
    assert [type(layer.mlp) for layer in loaded.model.layers] == [
        type(layer.mlp) for layer in model.model.layers
    ]
    assert torch.allclose(_logits(loaded, _ids()), _logits(model, _ids()), atol=1e-6, rtol=0)


def test_sparse_step_copies_keep_their_mlp_kind():
    model = _sparse_step2_moe()
    kinds = [type(layer.mlp).__name__ for layer in model.model.layers]
    assert kinds[0] != kinds[1]  # dense, MoE, dense, MoE
    expand_layers(model, 2)  # copies of blocks 1 and 3 (both MoE) land at 2 and 5
    assert [type(layer.mlp).__name__ for layer in model.model.layers] == [
        kinds[i] for i in (0, 1, 1, 2, 3, 3)
    ]
    assert model.config.mlp_only_layers == [0, 3] and model.config.decoder_sparse_step == 1


@pytest.mark.parametrize("k", [0, 3, -1])
def test_bad_count_is_one_line_error(tokenizer, k):
    model = _model(tokenizer, "qwen3")  # 2 layers
    with pytest.raises(LmforgeError, match=f"^--expand_layers N must .*; got {k}$") as err:
        expand_layers(model, k)
    assert "\n" not in str(err.value)
    assert len(model.model.layers) == 2


def test_model_without_layer_list():
    with pytest.raises(LmforgeError, match="no") as err:
        expand_layers(torch.nn.Linear(2, 2), 1)
    assert "\n" not in str(err.value)
