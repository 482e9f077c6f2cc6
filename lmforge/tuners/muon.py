"""`--optim muon`: Muon (torch.optim.Muon) for the decoder blocks' weight matrices, AdamW for the rest.

The split is nanochat's and modded-nanogpt's: Muon orthogonalises the momentum of each hidden
2-D matrix (attention and MLP projections, inside the decoder layers); embeddings, the LM head,
norms, biases and anything not 2-D (a fused MoE expert tensor, a value head) stay on AdamW.
Muon runs with `adjust_lr_fn="match_rms_adamw"` (Moonshot, "Muon is Scalable for LLM Training",
arXiv 2502.16982): its update is scaled to AdamW's RMS, so `--learning_rate` and `--weight_decay`
mean the same for both parts and the LR schedule drives both.

`MuonAdamW` is written here because nothing installed combines two optimizers into one that the
Trainer can schedule and checkpoint (torch, transformers 5.25, accelerate: none; transformers only
accepts an optimizer factory). It is one `torch.optim.Optimizer` owning every param group and the
state; the two torch optimizers only do the arithmetic, reading those groups and that state when
stepped, so the scheduler, `state_dict` / `load_state_dict` (resume) and gradient clipping see one
optimizer and nothing is kept twice.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.errors import LmforgeError

# a group's flag: Muon steps it (else AdamW); saved with the group in the optimizer state
USE_MUON = "use_muon"


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the groups flagged `use_muon`, AdamW for the others, as one optimizer."""

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], *, lr: float, **adamw_kwargs: Any):
        muon_groups = [g for g in muon_groups if g["params"]]
        adamw_groups = [g for g in adamw_groups if g["params"]]
        # the two engines fill in each group's defaults (momentum, betas, eps, ...)
        self._muon = (
            torch.optim.Muon(muon_groups, lr=lr, adjust_lr_fn="match_rms_adamw") if muon_groups else None
        )
        self._adamw = torch.optim.AdamW(adamw_groups or [{"params": []}], lr=lr, **adamw_kwargs)
        for group in muon_groups:
            group[USE_MUON] = True
        for group in adamw_groups:
            group[USE_MUON] = False
        super().__init__([*muon_groups, *adamw_groups], {"lr": lr})

    def add_param_group(self, param_group: dict) -> None:
        if USE_MUON not in param_group:  # a group added later (PPO's critic): AdamW, with its defaults
            self._adamw.add_param_group(param_group)
            param_group[USE_MUON] = False
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # re-read every step: load_state_dict replaces the groups and the state
        for engine, flag in ((self._muon, True), (self._adamw, False)):
            if engine is not None:
                engine.param_groups = [g for g in self.param_groups if g[USE_MUON] is flag]
                engine.state = self.state
                engine.step()
        return loss


def muon_optimizer(model, args) -> MuonAdamW:
    """`MuonAdamW` over `model`'s trainable parameters, with the Trainer's lr, weight decay (not on
    biases / norms, as the Trainer's own AdamW) and Adam betas / epsilon."""
    from transformers import Trainer

    from lmforge.models.parts import decoder_layers

    # the Trainer's rule (no decay on biases and norms); it does not use `self`
    decay = set(Trainer.get_decay_parameter_names(None, model))
    in_blocks = {id(p) for p in decoder_layers(model).parameters()}
    muon, adamw_decay, adamw_rest = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in in_blocks and p.ndim == 2:
            muon.append(p)
        else:
            (adamw_decay if name in decay else adamw_rest).append(p)
    if not muon:
        raise LmforgeError("--optim muon: no trainable weight matrix in the decoder layers for Muon to train")
    wd = args.weight_decay
    return MuonAdamW(
        [{"params": muon, "weight_decay": wd}],
        [{"params": adamw_decay, "weight_decay": wd}, {"params": adamw_rest, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
