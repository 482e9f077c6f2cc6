"""Presets and from-scratch models: MiniMind parameter counts, native configs, save → plain
transformers reload → identical greedy generation."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lmforge.models.presets import PRESETS, build_config, count_parameters, ffn_width
from lmforge.models.scratch import init_model

# reference/minimind_facts.md
MINIMIND_PARAMS = {
    "minimind2-small": 25.83e6,
    "minimind2": 104.03e6,
    "minimind2-moe": 145.03e6,
    "minimind3": 63.91e6,
    "minimind3-moe": 198.42e6,
}


@pytest.mark.parametrize("preset", sorted(MINIMIND_PARAMS))
def test_preset_parameter_counts_within_one_percent(preset):
    config = build_config(preset)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = count_parameters(model)
    assert abs(n - MINIMIND_PARAMS[preset]) / MINIMIND_PARAMS[preset] < 0.01, n


def test_tiny_preset_is_about_half_a_million():
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(build_config("tiny"))
    assert 0.4e6 < count_parameters(model) < 0.6e6


def test_presets_are_native_architectures():
    expected = {
        "tiny": "qwen3",
        "minimind2-small": "llama",
        "minimind2": "llama",
        "minimind2-moe": "qwen2_moe",
        "minimind3": "qwen3",
        "minimind3-moe": "qwen3_moe",
    }
    assert set(PRESETS) == set(expected)
    for name, model_type in expected.items():
        cfg = build_config(name)
        assert cfg.model_type == model_type
        assert cfg.tie_word_embeddings and cfg.rope_parameters["rope_theta"] == 1e6 and cfg.vocab_size == 6400


def test_ffn_rules():
    assert ffn_width(512) == 1408 and ffn_width(768) == 2048 and ffn_width(768, "pi") == 2432


def test_explicit_sizes_beat_the_preset():
    cfg = build_config("minimind2-small", hidden_size=256, num_hidden_layers=2)
    assert cfg.hidden_size == 256 and cfg.num_hidden_layers == 2 and cfg.intermediate_size == ffn_width(256)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen3_moe", "qwen2_moe"])
def test_saved_model_reloads_in_plain_transformers_and_generates_the_same(tmp_path, tokenizer, arch):
    model = init_model(tokenizer, preset="tiny", arch=arch, seed=1)
    model.eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)  # no trust_remote_code anywhere
    assert config.model_type == arch
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    kw = dict(max_new_tokens=12, do_sample=False, min_new_tokens=12)
    with torch.no_grad():
        a = model.generate(**prompt, **kw)
        b = reloaded.generate(**prompt, **kw)
    assert torch.equal(a, b)
    assert a.shape[1] == prompt["input_ids"].shape[1] + 12


def test_generation_config_stops_at_im_end(tokenizer):
    model = init_model(tokenizer, preset="tiny")
    eos = model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0


def test_yarn_rope_scaling_config():
    cfg = build_config("tiny", rope_scaling="yarn", rope_factor=16, original_max_position_embeddings=2048)
    assert cfg.rope_parameters["rope_type"] == "yarn" and cfg.rope_parameters["factor"] == 16.0
    assert cfg.rope_parameters["original_max_position_embeddings"] == 2048
