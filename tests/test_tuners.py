"""Every tuner through the real pipeline on the tiny model: a few SFT steps, then what trained, what
stayed frozen, and that the saved result reloads to the same logits; merge ≡ base + adapter."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.cli import main as cli
from lmforge.errors import LmforgeError
from lmforge.pipeline import run_train
from lmforge.training.trainer import LmforgeTrainer

QUIET = ["--report_to", "none", "--dataloader_num_workers", "0", "--plot", "false"]
PROBE = torch.tensor([[1, 45, 300, 17, 900, 5, 61, 2, 1, 77, 412, 33]])

# (tuner flags, what the final run folder holds)
CASES = {
    "lora": (["--tuner", "lora"], "adapter"),
    "dora": (["--tuner", "dora"], "adapter"),
    "rslora": (["--tuner", "lora", "--use_rslora", "true", "--lora_target", "q_proj,v_proj"], "adapter"),
    "pissa": (["--tuner", "pissa", "--pissa_iter", "4"], "adapter"),
    "loraplus": (["--tuner", "lora", "--loraplus_lr_ratio", "16"], "adapter"),
    "lora_regex": (["--tuner", "lora", "--lora_target", r".*mlp\.(up|down)_proj"], "adapter"),
    "lora_modules_to_save": (["--tuner", "lora", "--modules_to_save", "norm"], "adapter"),
    "adalora": (["--tuner", "adalora", "--adalora_tinit", "1", "--adalora_tfinal", "1"], "adapter"),
    "ia3": (["--tuner", "ia3"], "adapter"),
    "vera": (["--tuner", "vera", "--vera_rank", "32"], "adapter"),
    "boft": (["--tuner", "boft", "--boft_block_size", "8"], "adapter"),
    "fourierft": (["--tuner", "fourierft", "--fourier_n_frequency", "200"], "adapter"),
    "loha": (["--tuner", "loha"], "adapter"),
    "lokr": (["--tuner", "lokr"], "adapter"),
    "oft": (["--tuner", "oft", "--oft_block_size", "16"], "adapter"),
    "freeze": (["--tuner", "freeze", "--freeze_trainable_layers", "1"], "full"),
    "freeze_modules": (
        [
            "--tuner",
            "freeze",
            "--freeze_trainable_layers",
            "-1",
            "--freeze_trainable_modules",
            "mlp",
            "--freeze_extra_modules",
            "norm",
        ],
        "full",
    ),
    "llama_pro": (["--tuner", "llama_pro", "--expand_layers", "2"], "full"),
    "galore": (["--use_galore", "true", "--galore_rank", "4", "--galore_update_interval", "2"], "full"),
    "apollo": (["--use_apollo", "true", "--apollo_rank", "4", "--apollo_update_interval", "2"], "full"),
    "badam": (["--use_badam", "true", "--badam_switch_interval", "1"], "full"),
}
MERGE_CASES = ("lora", "dora", "pissa")


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    from lmforge.models.scratch import init_model

    out = tmp_path_factory.mktemp("tuners") / "base"
    init_model(tokenizer, preset="tiny", seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def captured(monkeypatch):
    """Wrap the trainer's `train`: parameters before/after and the trained model's logits on PROBE."""
    seen: dict = {}
    original = LmforgeTrainer.train

    def train(self, *args, **kwargs):
        params = dict(self.model.named_parameters())
        seen["trainable"] = {n for n, p in params.items() if p.requires_grad}
        seen["before"] = {n: p.detach().clone() for n, p in params.items()}
        result = original(self, *args, **kwargs)
        seen["after"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.model.eval()
        with torch.no_grad():
            seen["logits"] = self.model(input_ids=PROBE).logits
        return result

    monkeypatch.setattr(LmforgeTrainer, "train", train)
    return seen


def _sft(base, data, out, *extra):
    return run_train(
        "sft",
        [
            "--model_name_or_path",
            str(base),
            "--dataset",
            str(data),
            "--output_dir",
            str(out),
            "--max_length",
            "64",
            "--per_device_train_batch_size",
            "4",
            "--max_steps",
            "4",
            "--learning_rate",
            "1e-2",
            "--save_steps",
            "100",
            *QUIET,
            *extra,
        ],
    )


def _load_result(run_dir: Path, base: Path):
    if (run_dir / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run_dir)
    return AutoModelForCausalLM.from_pretrained(run_dir)


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=PROBE).logits


@pytest.mark.parametrize("case", list(CASES))
def test_every_tuner_trains_what_it_should(case, base, synth_dir, tmp_path, captured, one_thread):
    flags, kind = CASES[case]
    run_dir = Path(_sft(base, synth_dir / "sft.jsonl", tmp_path / case, *flags))
    losses = [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)

    before, after = captured["before"], captured["after"]
    trainable = captured["trainable"]
    if case == "badam":  # one decoder layer at a time; embeddings and the final norm stay as they are
        trainable = {n for n in before if ".layers." in n}
    assert trainable, "nothing was trainable"
    if kind == "adapter":
        assert all(n.startswith("base_model.") for n in trainable)
        assert len(trainable) < len(before)
    unchanged = sorted(n for n in trainable if torch.equal(before[n], after[n]))
    assert not unchanged, f"trainable but unchanged: {unchanged[:5]}"
    moved = sorted(n for n in before if n not in trainable and not torch.equal(before[n], after[n]))
    assert not moved, f"frozen but changed: {moved[:5]}"

    assert (run_dir / ("adapter_config.json" if kind == "adapter" else "model.safetensors")).is_file()
    reloaded = _load_result(run_dir, base)
    torch.testing.assert_close(_logits(reloaded), captured["logits"], atol=1e-5, rtol=0)
    card = (run_dir / "README.md").read_text()
    assert "trainable params" in card

    if case in MERGE_CASES:  # merge ≡ base + adapter (for PiSSA: the adapter converted to plain LoRA)
        merged = tmp_path / "merged"
        assert cli(["merge", str(run_dir), "--output_dir", str(merged)]) == 0
        full = AutoModelForCausalLM.from_pretrained(merged)
        assert not any("lora" in n for n, _ in full.named_parameters())
        torch.testing.assert_close(_logits(full), captured["logits"], atol=1e-5, rtol=0)


def test_pissa_adapter_is_converted_to_plain_lora(base, synth_dir, tmp_path, captured, one_thread):
    run_dir = Path(
        _sft(base, synth_dir / "sft.jsonl", tmp_path / "p", "--tuner", "pissa", "--lora_rank", "4")
    )
    saved = json.loads((run_dir / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["init_lora_weights"] is True  # rank 2r on the original base
    assert (run_dir / "pissa_init" / "adapter_config.json").is_file()


def test_llama_pro_trains_only_the_new_blocks(base, synth_dir, tmp_path, captured, one_thread):
    run_dir = Path(
        _sft(base, synth_dir / "sft.jsonl", tmp_path / "lp", "--tuner", "llama_pro", "--expand_layers", "2")
    )
    assert json.loads((run_dir / "config.json").read_text())["num_hidden_layers"] == 4
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n in captured["trainable"]}
    assert layers == {1, 3}


def test_lora_identity_changes_the_answer(base, synth_dir, tmp_path, one_thread):
    """MiniMind's train_lora flags on the bundled identity data; greedy answers before and after."""
    from lmforge.data.synth import LORA_IDENTITY
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.engine import Engine

    greedy = GenerationArgs(temperature=0, max_new_tokens=30)

    questions = {"en": "Who are you?", "zh": "你是谁？"}
    plain = Engine.from_path(str(base), device="cpu")
    before = {k: plain.chat([{"role": "user", "content": q}], greedy).text for k, q in questions.items()}
    save_dir = tmp_path / "out"
    run_train(
        "sft",
        [
            "--from_weight",
            str(base),
            "--data_path",
            str(synth_dir / "lora_identity.jsonl"),
            "--lora_name",
            "lora_identity",
            "--hidden_size",
            "64",
            "--save_dir",
            str(save_dir),
            "--learning_rate",
            "5e-3",
            "--epochs",
            "6",
            "--batch_size",
            "8",
            "--max_seq_len",
            "64",
            *QUIET,
        ],
    )
    assert (save_dir / "lora" / "lora_identity_64" / "adapter_config.json").is_file()
    tuned = Engine.from_path(
        str(base), device="cpu", lora_weight="lora_identity", save_dir=str(save_dir), hidden_size=64
    )
    for lang, q in questions.items():
        answer = tuned.chat([{"role": "user", "content": q}], greedy).text
        assert before[lang].strip() != LORA_IDENTITY[lang]
        assert answer.strip() == LORA_IDENTITY[lang], (lang, before[lang], answer)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--tuner", "lora", "--model_name_or_path", "none"], "adapts an existing model"),
        (["--tuner", "lora", "--quantization_bit", "4"], "needs a CUDA GPU"),
        (["--tuner", "lora", "--lora_target", "nonexistent_proj"], "nonexistent_proj"),
        (["--tuner", "freeze", "--freeze_trainable_modules", "attention"], "no module 'attention'"),
        (["--tuner", "freeze", "--freeze_trainable_layers", "9"], "--freeze_trainable_layers"),
        (["--tuner", "llama_pro"], "--expand_layers"),
        (["--tuner", "llama_pro", "--expand_layers", "3"], "must divide"),
        (["--tuner", "lora", "--use_galore", "true"], "--tuner full"),
        (["--tuner", "ia3", "--loraplus_lr_ratio", "4"], "LoRA adapters"),
        (["--tuner", "pissa", "--pissa_convert", "false"], "residual"),
    ],
)
def test_bad_tuner_flags_are_one_line_errors(flags, needle, base, synth_dir, tmp_path):
    with pytest.raises(LmforgeError) as err:
        _sft(base, synth_dir / "sft.jsonl", tmp_path / "bad", *flags)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_adapter_learning_rate_default_and_aliases():
    from lmforge.pipeline import resolve_train_config

    _, cfg = resolve_train_config(
        "sft", ["--sft_type", "LoRA", "--target_modules", "q_proj,v_proj", "--lora_lr_ratio", "8"]
    )
    assert cfg["tuner"] == "lora" and cfg["lora_target"] == "q_proj,v_proj" and cfg["loraplus_lr_ratio"] == 8
    assert cfg["learning_rate"] == 1e-4  # adapters default to MiniMind's train_lora rate
    _, cfg = resolve_train_config("sft", ["--finetuning_type", "lora", "--learning_rate", "3e-4"])
    assert cfg["learning_rate"] == 3e-4
    _, cfg = resolve_train_config("sft", ["--finetuning_type", "full"])
    assert cfg["learning_rate"] == 5e-7


@pytest.mark.parametrize("tuner", ["lora", "pissa", "freeze"])
def test_adapter_resume_reproduces_the_losses(tuner, base, synth_dir, tmp_path, one_thread):
    import shutil

    flags = ["--tuner", tuner, "--max_steps", "6", "--save_steps", "3", "--save_total_limit", "5"]
    data = synth_dir / "sft.jsonl"
    straight = Path(_sft(base, data, tmp_path / "a", *flags))
    interrupted = Path(_sft(base, data, tmp_path / "b", *flags))
    shutil.rmtree(interrupted / "checkpoint-6")
    (interrupted / "lmforge_finished.json").unlink()
    _sft(base, data, interrupted, *flags, "--resume_from_checkpoint", str(interrupted / "checkpoint-3"))

    def losses(d):
        return [json.loads(x)["loss"].hex() for x in (d / "metrics.jsonl").read_text().splitlines()]

    assert len(losses(straight)) == 6 and losses(straight) == losses(interrupted)


@pytest.mark.parametrize("flag,package", [("use_galore", "galore-torch"), ("use_badam", "badam")])
def test_missing_optimizer_package_names_the_extra(flag, package, monkeypatch):
    import importlib.util

    from lmforge.pipeline import resolve_train_config
    from lmforge.tuners import optim

    real = importlib.util.find_spec
    monkeypatch.setattr(
        optim.importlib.util, "find_spec", lambda m: None if m in ("galore_torch", "badam") else real(m)
    )
    _, cfg = resolve_train_config("sft", [f"--{flag}", "true"])
    with pytest.raises(LmforgeError, match=rf"needs the {package} package: pip install 'lmforge\[optim\]'"):
        optim.training_overrides(cfg)
        optim.optimizer_factory(cfg, "full")
