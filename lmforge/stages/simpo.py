"""SimPO (Meng et al. 2024, arXiv:2405.14734): the length-normalised log-likelihood margin of
chosen over rejected must exceed --simpo_gamma; no reference model.
The loss lives in lmforge/training/ref_free.py."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.fields import arg

DATA_KIND = "preference"

DEFAULTS = {
    "learning_rate": 4e-8,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "model_name_or_path": "full_sft",
}


@dataclass
class Args:
    beta: float = arg(2.0, "Scale of the preference term")
    simpo_gamma: float = arg(0.5, "Target reward margin gamma (LLaMA-Factory simpo_gamma)")
    cpo_alpha: float = arg(0.0, "Add this weight x the chosen answers' NLL")
    label_smoothing: float = arg(0.0, "Probability a preference label is flipped")


def validate(cfg) -> None:
    from lmforge.training.preference import check_ref_free_flags

    check_ref_free_flags(cfg)


def trainer_config(cfg):
    return None, {}


def prepare(ctx, rows):
    from lmforge.training.pairs import tokenize_pairs

    return tokenize_pairs(ctx, rows)


def build_trainer(ctx):
    from lmforge.training.pairs import ref_free_trainer

    return ref_free_trainer(ctx, "simpo")
