"""The reliability guards of lmforge/training/trainer.py, each pinned by a test that fails when the
guard is broken: the NaN guard's loss check and its gradient-norm check on their own (the fault
hook's `loss` and `grad` kinds), the guard on every TRL-based stage (dpo, kto, rm, grpo), checkpoints
invisible until completely written, and RNG states saved and restored on resume (a run with LoRA
dropout, whose losses depend on the RNG, resumes bitwise)."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.pipeline import run_train
from lmforge.runs import latest_checkpoint

QUIET = ["--report_to", "none", "--dataloader_num_workers", "0", "--plot", "false", "--logging_steps", "5"]


def _records(run_dir):
    return [json.loads(x) for x in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def _weights(ckpt) -> dict[str, torch.Tensor]:
    return load_file(str(Path(ckpt, "model.safetensors")))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _finite(w: dict) -> bool:
    return all(torch.isfinite(t).all() for t in w.values())


def _pretrain(data, out, *extra):
    run_train(
        "pretrain",
        [
            "--preset", "tiny", "--dataset", str(data), "--output_dir", str(out), "--max_length", "64",
            "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--max_samples", "200",
            "--save_total_limit", "10", *QUIET, *extra,
        ],
    )  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_nan_guard_checks_loss_and_gradient_norm_each_on_its_own(kind, synth_dir, tmp_path, monkeypatch):
    """`loss`: a NaN loss value over finite gradients; `grad`: NaN gradients under a finite loss.
    Either alone must skip the step: the weights after the bad step equal those before it."""
    monkeypatch.setenv("LMFORGE_FAULT_NAN_AT_STEP", "3")
    monkeypatch.setenv("LMFORGE_FAULT_NAN_KIND", kind)
    out = _pretrain(synth_dir / "pretrain.jsonl", tmp_path / kind, "--max_steps", "4", "--save_steps", "1")
    records = _records(out)
    bad = records[2]
    if kind == "loss":
        assert not math.isfinite(bad["loss"]) and math.isfinite(bad["grad_norm"]), bad
    else:
        assert math.isfinite(bad["loss"]) and not math.isfinite(bad["grad_norm"]), bad
    assert records[-1]["nan_skipped"] == 1 and "nan_skipped" not in records[1]
    w = {step: _weights(out / f"checkpoint-{step}") for step in (2, 3, 4)}
    assert _same(w[2], w[3])  # the bad step was skipped: no update at all
    assert not _same(w[3], w[4]) and _finite(w[4])  # the next step trained again


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tokenizer):
    from lmforge.models.scratch import init_model

    out = tmp_path_factory.mktemp("guards") / "base"
    init_model(tokenizer, preset="tiny", seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# a length reward: completions of an untrained model differ in length, never in accuracy (all 0)
GRPO_REWARD = ["--reward_funcs", "length", "--length_target", "20"]
# stage → (data file, extra flags)
TRL_STAGES = {
    "dpo": ("dpo.jsonl", []),
    "kto": ("kto.jsonl", []),
    "rm": ("dpo.jsonl", []),
    # a length reward: completions of an untrained model differ in length, never all in accuracy (0)
    "grpo": ("rlaif.jsonl", ["--num_generations", "4", "--max_gen_len", "8", *GRPO_REWARD]),
}


@pytest.mark.parametrize("stage", list(TRL_STAGES))
def test_nan_guard_on_trl_stages(stage, tiny_base, synth_dir, tmp_path, monkeypatch, one_thread):
    """The README promises the guard for TRL's trainers too: step 2's NaN is skipped and counted."""
    data, extra = TRL_STAGES[stage]
    monkeypatch.setenv("LMFORGE_FAULT_NAN_AT_STEP", "2")
    out = tmp_path / stage
    run_train(
        stage,
        [
            "--model_name_or_path", str(tiny_base), "--dataset", str(synth_dir / data), "--output_dir", str(out),
            "--max_steps", "3", "--save_steps", "1", "--per_device_train_batch_size", "8", "--max_length", "64",
            "--learning_rate", "1e-3", "--save_total_limit", "10", *QUIET, *extra,
        ],
    )  # fmt: skip
    records = [r for r in _records(out) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert math.isfinite(records[0]["loss"]) and not math.isfinite(records[1]["loss"])
    assert records[-1]["nan_skipped"] == 1
    w = {step: _weights(out / f"checkpoint-{step}") for step in (1, 2, 3)}
    assert _same(w[1], w[2])  # skipped: the NaN never reached the weights
    assert not _same(w[2], w[3]) and _finite(w[3])  # and step 3 trained again


def test_checkpoint_is_invisible_until_complete(synth_dir, tmp_path, monkeypatch):
    """While a checkpoint is written no `checkpoint-N` exists in the run folder; a save that fails
    half-way leaves none behind, and the previous checkpoint stays the latest."""
    from transformers import Trainer

    out = tmp_path / "staged"
    seen = []
    original = Trainer._save_rng_state  # called after the weights and optimizer state are written

    def save_rng_state(self, output_dir):
        step = self.state.global_step
        seen.append(
            (step, (out / f"checkpoint-{step}").exists(), Path(output_dir, "model.safetensors").is_file())
        )
        if step == 4:
            raise RuntimeError("disk full (injected)")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", save_rng_state)
    with pytest.raises(RuntimeError, match="disk full"):
        _pretrain(synth_dir / "pretrain.jsonl", out, "--max_steps", "6", "--save_steps", "2")
    assert seen == [(2, False, True), (4, False, True)]  # written elsewhere, not in place
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert Path(latest_checkpoint(out)).name == "checkpoint-2"


def _lora_run(base, data, out, *extra):
    """Pretraining with LoRA dropout: every step draws dropout masks, so losses depend on the RNG."""
    run_train(
        "pretrain",
        [
            "--model_name_or_path", str(base), "--tuner", "lora", "--lora_dropout", "0.5", "--dataset", str(data),
            "--output_dir", str(out), "--max_length", "64", "--per_device_train_batch_size", "4",
            "--learning_rate", "3e-3", "--max_samples", "200", "--max_steps", "6", "--save_steps", "3",
            *QUIET, *extra,
        ],
    )  # fmt: skip
    return out


def test_resume_restores_the_rng_state(tiny_base, synth_dir, tmp_path, one_thread):
    data = synth_dir / "pretrain.jsonl"
    full = _lora_run(tiny_base, data, tmp_path / "full")
    ckpt = full / "checkpoint-3"
    assert (ckpt / "rng_state.pth").is_file()
    runs = {}
    for name in ("resumed", "no_rng_file"):
        run = tmp_path / name
        shutil.copytree(full, run)
        shutil.rmtree(run / "checkpoint-6")
        (run / "lmforge_finished.json").unlink()
        if name == "no_rng_file":
            (run / "checkpoint-3" / "rng_state.pth").unlink()
        _lora_run(tiny_base, data, run, "--from_resume", "1")
        runs[name] = [r["loss"] for r in _records(run) if "loss" in r]
    expected = [r["loss"] for r in _records(full) if "loss" in r]
    assert len(expected) == 6
    assert [x.hex() for x in runs["resumed"]] == [x.hex() for x in expected]  # bitwise
    # the check has teeth: without the saved RNG state the resumed steps draw other dropout masks
    assert runs["no_rng_file"][:3] == expected[:3] and runs["no_rng_file"][3:] != expected[3:]
