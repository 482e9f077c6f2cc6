"""`lmforge merge`: LoRA / DoRA / LoHa adapters folded into a tiny base give a plain HF model whose
logits and greedy output equal the PeftModel's; bad inputs and outputs are one-line errors."""

import json

import pytest
import torch

from lmforge.cli import main


@pytest.fixture(scope="module")
def base_dir(tokenizer, tmp_path_factory):
    from lmforge.models.scratch import init_model

    out = tmp_path_factory.mktemp("base")
    init_model(tokenizer, preset="tiny", seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _make_adapter(base_dir, tokenizer, out, config):
    """A saved adapter with noisy (non-trivial) weights; returns the PeftModel it came from."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p += 0.02 * torch.randn_like(p)
    peft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return peft_model.eval()


def _one_line_error(capsys, argv):
    capsys.readouterr()  # drop what the test's own loading printed
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "%|" not in ln]  # progress bars aside
    assert len(err) == 1 and err[0].startswith("lmforge: error:"), err
    return err[0]


def _configs():
    from peft import LoHaConfig, LoraConfig

    return {
        "lora": LoraConfig(r=4, target_modules="all-linear"),
        "dora": LoraConfig(r=4, target_modules="all-linear", use_dora=True),
        "loha": LoHaConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"]),
    }


@pytest.mark.parametrize("kind", ["lora", "dora", "loha"])
def test_merged_model_equals_peft_model(kind, base_dir, tokenizer, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    peft_model = _make_adapter(base_dir, tokenizer, tmp_path / "adapter", _configs()[kind])
    out = tmp_path / "merged"
    assert main(["merge", str(tmp_path / "adapter"), "--export_dir", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp-*"))

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in n or "hada" in n or "base_layer" in n for n, _ in merged.named_modules())
    assert str(base_dir) in (out / "README.md").read_text()
    ids = torch.tensor([tokenizer.encode("The quick brown fox jumps over")])
    with torch.no_grad():
        want, got = peft_model(ids).logits, merged(ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits
    assert (want - base_logits).abs().max() > 1e-3  # the adapter really changes the model
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    gen = GenerationConfig(
        do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=tok.pad_token_id, eos_token_id=None
    )
    with torch.no_grad():
        assert torch.equal(
            merged.generate(ids, generation_config=gen),
            peft_model.generate(input_ids=ids, generation_config=gen),
        )


def test_output_folder_is_never_clobbered(base_dir, tokenizer, tmp_path, capsys):
    from peft import LoraConfig

    _make_adapter(base_dir, tokenizer, tmp_path / "adapter", LoraConfig(r=2, target_modules=["q_proj"]))
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = _one_line_error(capsys, ["merge", "--lora_weight", str(tmp_path / "adapter"), "--output", str(out)])
    assert "not empty" in err and (out / "keep.txt").read_text() == "mine"
    argv = ["merge", str(tmp_path / "adapter"), "--output_dir", str(out), "--overwrite", "true"]
    assert main([*argv, "--dtype", "bf16"]) == 0
    assert (
        not (out / "keep.txt").exists()
        and json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    )


def test_bad_inputs_are_one_line_errors(base_dir, tokenizer, tmp_path, capsys):
    from peft import LoraConfig

    err = _one_line_error(capsys, ["merge", str(base_dir), "--output_dir", str(tmp_path / "o")])
    assert "already a full model" in err
    adapter = tmp_path / "adapter"
    _make_adapter(base_dir, tokenizer, adapter, LoraConfig(r=2, target_modules=["q_proj"]))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": "/nowhere/base"})
    )
    err = _one_line_error(capsys, ["merge", str(adapter), "--output_dir", str(tmp_path / "o")])
    assert "base model not found" in err and "/nowhere/base" in err
    err = _one_line_error(capsys, ["merge", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")])
    assert "no adapter_config.json" in err
    assert not (tmp_path / "o").exists()


def test_minimind_names_and_help(base_dir, tokenizer, tmp_path, capsys, monkeypatch):
    import shutil

    from peft import LoraConfig

    save = tmp_path / "out"
    shutil.copytree(base_dir, save / "full_sft_64")
    _make_adapter(
        save / "full_sft_64",
        tokenizer,
        save / "lora" / "lora_identity_64",
        LoraConfig(r=2, target_modules=["q_proj"]),
    )
    cfg_path = save / "lora" / "lora_identity_64" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": None}))
    monkeypatch.chdir(tmp_path)
    argv = ["merge", "--ckpt_dir", "lora_identity", "--model", "full_sft", "--hidden_size", "64"]
    assert main([*argv, "--output_dir", "merged"]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()

    assert main(["merge", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in (
        "--adapter",
        "--model",
        "--output_dir",
        "--save_dir",
        "--hidden_size",
        "--use_moe",
        "--dtype",
    ):
        assert f"  {flag}" in text
    assert "--lora_weight" in text and "--export_dir" in text and "[default: 'auto']" in text
