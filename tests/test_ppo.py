"""lmforge's own PPO and SPO trainers through the real pipeline on a tiny random model: per-step
metrics, the saved critic, no reference copy under LoRA, KL 0 while policy == reference, and exact
resume (critic, old actor and SPO baseline tracker restored from the checkpoint)."""

import json
import math
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from lmforge.errors import LmforgeError
from lmforge.pipeline import run_train

QUIET = ["--report_to", "none", "--dataloader_num_workers", "0", "--plot", "false"]
COMMON_KEYS = (
    "loss", "reward/mean", "reward/std", "rewards/accuracy/mean", "rewards/length/mean", "kl", "entropy",
    "response_length", "clip_fraction", "approx_kl", "policy_loss",
)  # fmt: skip
PPO_KEYS = ("value_loss", "value_clip_fraction", "values/mean", "returns/mean", "critic_grad_norm")
SPO_KEYS = ("baseline/mean", "advantage/mean", "kl_loss")


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    from lmforge.models.scratch import init_model

    out = tmp_path_factory.mktemp("ppo") / "base"
    init_model(tokenizer, preset="tiny", seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _run(stage, base, data, out, *extra, steps=3):
    argv = [
        "--model_name_or_path", str(base), "--dataset", str(data), "--output_dir", str(out),
        "--max_steps", str(steps), "--per_device_train_batch_size", "4", "--max_gen_len", "12",
        "--learning_rate", "1e-3", "--max_length", "64", "--gradient_accumulation_steps", "1",
        "--reward_funcs", "accuracy,length", "--length_target", "20", "--save_steps", "1000", *QUIET,
    ]  # fmt: skip
    if stage == "ppo":
        argv += ["--critic_learning_rate", "1e-3"]
    return Path(run_train(stage, argv + list(extra)))


def _records(run_dir):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


@pytest.fixture
def capture(monkeypatch):
    """Keep the trainer a stage builds (run_train returns only the folder)."""
    import importlib

    built = {}

    def patch(stage):
        module = importlib.import_module(f"lmforge.stages.{stage}")
        original = module.build_trainer

        def build(ctx):
            built["trainer"] = original(ctx)
            return built["trainer"]

        monkeypatch.setattr(module, "build_trainer", build)
        return built

    return patch


@pytest.mark.parametrize("stage", ["ppo", "spo"])
def test_runs_logs_metrics_and_saves(stage, base, synth_dir, tmp_path, capture, one_thread):
    built = capture(stage)
    run_dir = _run(stage, base, synth_dir / "rlaif.jsonl", tmp_path / stage)
    records = _records(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        for key in COMMON_KEYS + (PPO_KEYS if stage == "ppo" else SPO_KEYS):
            assert key in r and math.isfinite(r[key]), (key, r)
        expected = r["rewards/accuracy/mean"] + r["rewards/length/mean"]
        assert abs(r["reward/mean"] - expected) < 1e-6
        assert 0 < r["response_length"] <= 12
    # Step 1: the sampling policy is the starting model, which is the reference.
    assert records[0]["kl"] == 0.0
    assert records[-1]["kl"] != 0.0  # and it moved away after two updates at lr 1e-3
    trainer = built["trainer"]
    assert trainer.ref_model is not None  # full tuning keeps a frozen copy
    AutoModelForCausalLM.from_pretrained(run_dir)
    assert (run_dir / "lmforge_finished.json").is_file()
    if stage == "ppo":
        groups = trainer.optimizer.param_groups
        assert len(groups) == 3 and groups[-1]["params"][0] is next(trainer.critic.parameters())
        critic = AutoModelForTokenClassification.from_pretrained(run_dir / "critic")
        assert critic.config.num_labels == 1
        assert (run_dir / "checkpoint-3" / "critic" / "config.json").is_file()
    else:
        state = json.loads((run_dir / "checkpoint-3" / "spo_value_tracker.json").read_text())
        assert state["global_count"] == 12 and state["rate"] == 0.1


@pytest.mark.parametrize("stage,tuner", [("ppo", "lora"), ("spo", "lora"), ("spo", "pissa")])
def test_adapter_reference(stage, tuner, base, synth_dir, tmp_path, capture, one_thread):
    built = capture(stage)
    run_dir = _run(stage, base, synth_dir / "rlaif.jsonl", tmp_path / tuner, "--tuner", tuner, steps=2)
    trainer = built["trainer"]
    # LoRA: no second copy of the model, the reference is the adapter-disabled base. PiSSA's disabled
    # base is a residual, not the starting model, so it keeps a frozen copy of the initial adapter model.
    assert (trainer.ref_model is None) == (tuner == "lora")
    records = _records(run_dir)
    assert records[0]["kl"] == 0.0 and records[1]["kl"] != 0.0
    assert (run_dir / "adapter_config.json").is_file()
    if stage == "ppo":
        assert (run_dir / "critic" / "config.json").is_file()


def test_no_reference_without_kl(base, synth_dir, tmp_path, capture, one_thread):
    built = capture("spo")
    run_dir = _run("spo", base, synth_dir / "rlaif.jsonl", tmp_path / "nokl", "--beta", "0", steps=1)
    assert built["trainer"].ref_model is None
    assert "kl" not in _records(run_dir)[0]


@pytest.mark.parametrize("stage", ["ppo", "spo"])
def test_resume_is_exact(stage, base, synth_dir, tmp_path, one_thread):
    data, out = synth_dir / "rlaif.jsonl", tmp_path / f"resume-{stage}"
    extra = ["--save_steps", "2"] + (["--update_old_actor_freq", "3"] if stage == "ppo" else [])
    extra += ["--gradient_accumulation_steps", "2"]
    _run(stage, base, data, out, *extra, steps=4)
    full = _records(out)
    final = (out / "model.safetensors").read_bytes()
    critic = (out / "critic" / "model.safetensors").read_bytes() if stage == "ppo" else None
    shutil.rmtree(out / "checkpoint-4")
    (out / "lmforge_finished.json").unlink()
    _run(stage, base, data, out, *extra, "--resume_from_checkpoint", str(out / "checkpoint-2"), steps=4)
    resumed = _records(out)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    keys = ("loss", "grad_norm", "reward/mean", "entropy", "approx_kl", "kl")
    keys += (
        ("value_loss", "values/mean", "returns/mean")
        if stage == "ppo"
        else ("baseline/mean", "advantage/mean")
    )
    for a, b in zip(full, resumed):
        for key in keys:
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    assert (out / "model.safetensors").read_bytes() == final
    if stage == "ppo":
        assert (out / "critic" / "model.safetensors").read_bytes() == critic


@pytest.mark.parametrize(
    "stage,flags,needle",
    [
        ("ppo", ["--update_old_actor_freq", "0"], "update_old_actor_freq"),
        ("ppo", ["--num_generations", "0"], "num_generations"),
        ("spo", ["--spo_ema", "0"], "spo_ema"),
        ("spo", ["--reward_funcs", "bogus"], "bogus"),
    ],
)
def test_flag_errors(stage, flags, needle, base, synth_dir, tmp_path):
    with pytest.raises(LmforgeError, match=needle):
        _run(stage, base, synth_dir / "rlaif.jsonl", tmp_path / "bad", *flags)


def test_minimind_flags_resolve():
    from lmforge.pipeline import resolve_train_config

    _, cfg = resolve_train_config(
        "ppo", ["--batch_size", "2", "--learning_rate", "8e-8", "--critic_learning_rate", "8e-8",
                "--max_seq_len", "66", "--max_gen_len", "1536", "--clip_epsilon", "0.1", "--vf_coef", "0.5",
                "--kl_coef", "0.02", "--reasoning", "1", "--update_old_actor_freq", "4",
                "--reward_model_path", "out/rm"]
    )  # fmt: skip
    assert cfg["per_device_train_batch_size"] == 2 and cfg["max_length"] == 66 and cfg["reasoning"] is True
    assert cfg["critic_learning_rate"] == 8e-8 and cfg["update_old_actor_freq"] == 4
    _, cfg = resolve_train_config("spo", ["--accumulation_steps", "4", "--beta", "0.02", "--reasoning", "1"])
    assert cfg["gradient_accumulation_steps"] == 4 and cfg["beta"] == 0.02 and cfg["spo_ema"] == 0.1
