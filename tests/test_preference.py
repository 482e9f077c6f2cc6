"""Preference stages (rm, dpo, kto, orpo, simpo, cpo) through the real pipeline on a small SFT'd model:
each raises held-out preference accuracy, DPO starts at ln 2, the reward model ranks held-out pairs,
and LoRA-DPO keeps no second model."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lmforge.errors import LmforgeError
from lmforge.pipeline import run_train

QUIET = ["--report_to", "none", "--dataloader_num_workers", "0", "--plot", "false", "--save_steps", "1000"]
SMALL = ["--hidden_size", "128", "--num_hidden_layers", "4", "--intermediate_size", "384"]


def _metrics(run_dir):
    return [json.loads(x) for x in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def base(synth_dir, tmp_path_factory, one_thread):
    """A 1.6M-parameter model SFT'd on the synthetic chats: big enough to tell capitals apart."""
    out = tmp_path_factory.mktemp("pref") / "sft"
    run_train(
        "sft",
        [
            "--model_name_or_path", "none", "--preset", "tiny", *SMALL,
            "--dataset", str(synth_dir / "sft.jsonl"), "--output_dir", str(out),
            "--max_length", "64", "--per_device_train_batch_size", "16", "--max_steps", "200",
            "--learning_rate", "3e-3", *QUIET,
        ],
    )  # fmt: skip
    return out


def _pairs(path, tokenizer):
    """(prompt length, token ids) of chosen and rejected for every row of a preference file."""
    from lmforge.data.load import load_rows

    rows, _ = load_rows(str(path), "preference")
    pairs = []
    for r in rows:
        prompt = tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
        pair = []
        for side in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(r["prompt"] + r[side], tokenize=False)
            pair.append((len(tokenizer(prompt)["input_ids"]), tokenizer(full)["input_ids"]))
        pairs.append(pair)
    assert len(pairs) == 120
    return pairs


@pytest.fixture(scope="module")
def held_out(synth_dir, tokenizer):
    """dpo_heldout.jsonl: right-vs-wrong pairs on capitals and animal sounds that no training pair
    (dpo.jsonl, kto.jsonl) asks about or uses as a wrong answer; SFT taught them like every other fact."""
    return _pairs(synth_dir / "dpo_heldout.jsonl", tokenizer)


@pytest.fixture(scope="module")
def brief_held_out(synth_dir, tokenizer):
    """brief_heldout.jsonl: the brief answer ("Lisbon.") chosen over SFT's full sentence ("The capital
    of Portugal is Lisbon."), on the held-out facts that no brief.jsonl pair asks about."""
    return _pairs(synth_dir / "brief_heldout.jsonl", tokenizer)


def _completion_logps(model, n_prompt, ids):
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = model(input_ids=x).logits[0, :-1].float().log_softmax(-1).gather(-1, x[0, 1:, None])[:, 0]
    return lp[n_prompt - 1 :]


def _accuracy(scores):
    """Fraction of pairs scored chosen > rejected (ties count half)."""
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in scores) / len(scores)


def implied_reward_accuracy(policy, reference, pairs):
    """DPO / KTO: r = log π(y|x) − log π_ref(y|x); every pair ties (0.5) before training."""

    def reward(n, ids):
        return (_completion_logps(policy, n, ids).sum() - _completion_logps(reference, n, ids).sum()).item()

    return _accuracy([(reward(*c), reward(*r)) for c, r in pairs])


def likelihood_accuracy(model, pairs, mean: bool):
    """Reference-free stages: the policy's own (length-normalised for ORPO/SimPO) log-likelihood."""

    def score(n, ids):
        lp = _completion_logps(model, n, ids)
        return (lp.mean() if mean else lp.sum()).item()

    return _accuracy([(score(*c), score(*r)) for c, r in pairs])


def _train(stage, base, data, out, *extra):
    return run_train(
        stage,
        [
            "--model_name_or_path", str(base), "--dataset", str(data), "--output_dir", str(out),
            "--max_length", "64", "--per_device_train_batch_size", "16", "--max_steps", "80",
            "--warmup_steps", "8", *QUIET, *extra,
        ],
    )  # fmt: skip


# stage → (data file, flags, how accuracy is measured). DPO and KTO learn which fact is right: their
# implied reward generalises to unseen facts the SFT base knows (dpo_heldout). The reference-free
# stages are measured by the policy's own likelihood, which already ranks right above wrong facts
# (0.825 on dpo_heldout) and which their training on other facts lowered (issue 18: ORPO 0.750, SimPO
# 0.767, CPO 0.758); they learn a style instead, one that holds on unseen questions: brief answers
# over SFT's full sentences (brief.jsonl, measured on brief_heldout).
SHORT = ["--max_steps", "15", "--warmup_steps", "2"]
STAGES = {
    "dpo": ("dpo.jsonl", ["--learning_rate", "1e-3", "--max_steps", "40", "--warmup_steps", "4"], "implied"),
    "kto": ("kto.jsonl", ["--learning_rate", "2e-3", "--max_steps", "40", "--warmup_steps", "4"], "implied"),
    "orpo": ("brief.jsonl", ["--learning_rate", "2e-3", "--beta", "1.0", *SHORT], "mean"),
    "simpo": ("brief.jsonl", ["--learning_rate", "2e-3", *SHORT], "mean"),
    "cpo": ("brief.jsonl", ["--learning_rate", "1e-3", *SHORT], "sum"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_raises_held_out_preference_accuracy(
    stage, base, held_out, brief_held_out, synth_dir, tmp_path, one_thread
):
    data, flags, measure = STAGES[stage]
    run_dir = _train(stage, base, synth_dir / data, tmp_path / stage, *flags)
    records = _metrics(run_dir)
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    assert "rewards/chosen" in records[-1] and "rewards/margins" in records[-1]
    start = AutoModelForCausalLM.from_pretrained(base).eval()
    trained = AutoModelForCausalLM.from_pretrained(run_dir).eval()
    if measure == "implied":
        before, after = 0.5, implied_reward_accuracy(trained, start, held_out)
    else:
        before = likelihood_accuracy(start, brief_held_out, mean=measure == "mean")
        after = likelihood_accuracy(trained, brief_held_out, mean=measure == "mean")
    print(f"{stage}: held-out pair accuracy {before:.3f} -> {after:.3f}")
    # Measured (seeded, 120 held-out pairs): DPO 0.5 -> 0.800, KTO 0.5 -> 0.758; ORPO, SimPO and CPO
    # 0.000 -> 1.000. "Well above": DPO / KTO close at least 20% of the gap to perfect ranking (0.5 ->
    # 0.6), the brief stages 60% (0 -> 0.6): ORPO and CPO also train the chosen answer's likelihood,
    # which alone lifts brief answers (CPO with its preference term's sign flipped: 0.275; ORPO and
    # SimPO so flipped: 0.000; DPO on pairs with chosen and rejected swapped: 0.250).
    share = 0.2 if measure == "implied" else 0.6
    assert after >= before + share * (1 - before), (before, after)


@pytest.mark.slow
def test_reward_model_ranks_held_out_pairs(base, held_out, synth_dir, tmp_path, one_thread):
    run_dir = _train(
        "rm", base, synth_dir / "dpo.jsonl", tmp_path / "rm", "--learning_rate", "3e-4", "--val_size", "0.1",
        "--eval_steps", "40", "--plot", "true",
    )  # fmt: skip
    rm = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    assert rm.config.num_labels == 1

    def score(ids):
        with torch.no_grad():
            return rm(input_ids=torch.tensor([ids])).logits[0, 0].item()

    acc = _accuracy([(score(c[1]), score(r[1])) for c, r in held_out])
    evals = [r["eval_accuracy"] for r in _metrics(run_dir) if "eval_accuracy" in r]
    print(f"rm: held-out pair accuracy {acc:.3f}; val accuracy per eval {evals}")
    assert acc >= 0.7  # an untrained score head ranks these pairs at about chance (0.5)
    assert len(evals) == 2 and (Path(run_dir) / "rewards.png").is_file()


def test_dpo_starts_at_ln2_and_lora_keeps_no_reference_copy(base, synth_dir, tmp_path, monkeypatch):
    import trl.trainer.dpo_trainer as dpo_module

    def no_copy(*args, **kwargs):
        raise AssertionError("a reference model was loaded")

    monkeypatch.setattr(dpo_module, "create_model_from_path", no_copy)
    seen = {}
    original = dpo_module.DPOTrainer.train

    def train(self, *args, **kwargs):
        seen["ref_model"], seen["peft"] = self.ref_model, type(self.model).__name__
        return original(self, *args, **kwargs)

    monkeypatch.setattr(dpo_module.DPOTrainer, "train", train)
    run_dir = _train(
        "dpo", base, synth_dir / "dpo.jsonl", tmp_path / "lora", "--tuner", "lora", "--max_steps", "3"
    )
    assert seen["ref_model"] is None and seen["peft"].startswith("PeftModel")
    first = _metrics(run_dir)[0]
    assert abs(first["loss"] - math.log(2)) < 1e-3, first["loss"]  # policy == reference at step 1
    assert (Path(run_dir) / "adapter_config.json").is_file()


def test_full_dpo_starts_at_ln2_with_a_frozen_copy(base, synth_dir, tmp_path):
    run_dir = _train(
        "dpo", base, synth_dir / "dpo.jsonl", tmp_path / "full", "--max_steps", "2", "--pref_beta", "0.2"
    )
    first = _metrics(run_dir)[0]
    assert abs(first["loss"] - math.log(2)) < 1e-3 and abs(first["rewards/margins"]) < 1e-6


def test_preference_flags_and_errors(base, synth_dir, tmp_path):
    from lmforge.pipeline import resolve_train_config

    _, cfg = resolve_train_config(
        "dpo",
        ["--pref_beta", "0.3", "--pref_loss", "ipo", "--pref_ftx", "0.5", "--dpo_label_smoothing", "0.1"],
    )
    assert (cfg["beta"], cfg["loss_type"], cfg["rpo_alpha"], cfg["label_smoothing"]) == (0.3, "ipo", 0.5, 0.1)
    from lmforge.stages import dpo

    _, fields = dpo.trainer_config(cfg)
    assert fields["loss_type"] == ["ipo", "sft"] and fields["loss_weights"] == [1.0, 0.5]
    _, cfg = resolve_train_config("kto", ["--kto_chosen_weight", "2", "--kto_rejected_weight", "0.5"])
    assert (cfg["desirable_weight"], cfg["undesirable_weight"]) == (2.0, 0.5)
    with pytest.raises(LmforgeError, match="use `lmforge train orpo|simpo`"):
        _train("dpo", base, synth_dir / "dpo.jsonl", tmp_path / "bad", "--pref_loss", "simpo")
    with pytest.raises(LmforgeError, match="needs a starting model"):
        _train("rm", "none", synth_dir / "dpo.jsonl", tmp_path / "bad2")
    with pytest.raises(LmforgeError, match=r"sft\.jsonl:1"):  # chat rows are not preference rows
        _train("dpo", base, synth_dir / "sft.jsonl", tmp_path / "bad3")


def test_precomputed_reference_log_probs(base, synth_dir, tmp_path):
    run_dir = _train(
        "dpo",
        base,
        synth_dir / "dpo.jsonl",
        tmp_path / "pre",
        "--max_steps",
        "2",
        "--precompute_ref_log_probs",
        "true",
    )
    first = _metrics(run_dir)[0]
    assert abs(first["loss"] - math.log(2)) < 1e-3 and abs(first["rewards/margins"]) < 1e-6
