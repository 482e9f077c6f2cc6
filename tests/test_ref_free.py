"""Reference-free preference losses (lmforge/training/ref_free.py): the math against hand-computed
values, the trainer's forward against log-probs computed independently, and a short optimisation."""

import math

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.training.ref_free import KINDS, RefFreePreferenceTrainer, log1mexp, preference_loss

F64 = torch.float64
CHOSEN = [-2.0, -6.0]  # per-sequence sums of completion log-probs
REJECTED = [-3.0, -4.0]
CHOSEN_TOKENS = [2, 3]
REJECTED_TOKENS = [3, 2]
NLL = 1.5


def _neg_logsigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


def _smoothed(x: float, eps: float) -> float:
    return (1 - eps) * _neg_logsigmoid(x) + eps * _neg_logsigmoid(-x)


def _call(kind, **kw):
    return preference_loss(
        kind,
        torch.tensor(CHOSEN, dtype=F64),
        torch.tensor(REJECTED, dtype=F64),
        torch.tensor(CHOSEN_TOKENS),
        torch.tensor(REJECTED_TOKENS),
        torch.tensor(NLL, dtype=F64),
        **kw,
    )


def _avg(sums, counts):
    return [s / n for s, n in zip(sums, counts)]


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_orpo_matches_hand_computed(eps):
    beta = 0.1
    loss, per_pair = _call("orpo", beta=beta, label_smoothing=eps)
    terms, odds = [], []
    for c, r in zip(_avg(CHOSEN, CHOSEN_TOKENS), _avg(REJECTED, REJECTED_TOKENS)):
        lo = math.log(math.exp(c) / (1 - math.exp(c))) - math.log(math.exp(r) / (1 - math.exp(r)))
        odds.append(lo)
        terms.append(_smoothed(lo, eps))
    want = NLL + beta * sum(terms) / len(terms)
    assert loss.ndim == 0
    assert float(loss) == pytest.approx(want, abs=1e-6)
    assert per_pair["log_odds"].tolist() == pytest.approx(odds, abs=1e-6)
    avg_c = _avg(CHOSEN, CHOSEN_TOKENS)
    assert per_pair["chosen_rewards"].tolist() == pytest.approx([beta * a for a in avg_c], abs=1e-6)


def test_orpo_log_odds_for_known_probabilities():
    # avg log-prob log 0.8 vs log 0.2: odds 4 vs 1/4, so the log odds ratio is log 16.
    loss, per_pair = preference_loss(
        "orpo",
        torch.tensor([3 * math.log(0.8)], dtype=F64),
        torch.tensor([2 * math.log(0.2)], dtype=F64),
        torch.tensor([3]),
        torch.tensor([2]),
        torch.tensor(0.7, dtype=F64),
        beta=0.1,
    )
    assert float(per_pair["log_odds"][0]) == pytest.approx(math.log(16), abs=1e-6)
    # −log σ(log 16) = log(1 + 1/16) = log(17/16)
    assert float(loss) == pytest.approx(0.7 + 0.1 * math.log(17 / 16), abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_simpo_matches_hand_computed(eps, alpha):
    beta, gamma = 2.5, 0.8
    loss, per_pair = _call("simpo", beta=beta, gamma=gamma, alpha=alpha, label_smoothing=eps)
    pairs = zip(_avg(CHOSEN, CHOSEN_TOKENS), _avg(REJECTED, REJECTED_TOKENS))
    terms = [_smoothed(beta * (c - r) - gamma, eps) for c, r in pairs]
    assert float(loss) == pytest.approx(sum(terms) / len(terms) + alpha * NLL, abs=1e-6)
    assert per_pair["rejected_rewards"].tolist() == pytest.approx(
        [beta * a for a in _avg(REJECTED, REJECTED_TOKENS)], abs=1e-6
    )
    assert "log_odds" not in per_pair


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cpo_matches_hand_computed(eps):
    beta, alpha = 0.1, 1.0
    loss, per_pair = _call("cpo", beta=beta, alpha=alpha, label_smoothing=eps)
    terms = [_smoothed(beta * (c - r), eps) for c, r in zip(CHOSEN, REJECTED)]
    assert float(loss) == pytest.approx(sum(terms) / len(terms) + alpha * NLL, abs=1e-6)
    assert per_pair["chosen_rewards"].tolist() == pytest.approx([beta * c for c in CHOSEN], abs=1e-6)
    assert per_pair["rejected_rewards"].tolist() == pytest.approx([beta * r for r in REJECTED], abs=1e-6)


def test_float32_inputs_and_unknown_kind():
    loss, _ = preference_loss(
        "cpo", torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([2]), torch.tensor([3]),
        torch.tensor(1.0), beta=0.1,
    )  # fmt: skip
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(_neg_logsigmoid(0.1), abs=1e-6)
    with pytest.raises(LmforgeError, match="'dpo' is not known") as err:
        _call("dpo", beta=0.1)
    assert "\n" not in str(err.value)


def test_log1mexp_is_finite_at_the_edges():
    x = torch.tensor([-1e-12, -1e-6, -0.5, -0.7, -1.0, -50.0, -1e4], dtype=torch.float32, requires_grad=True)
    y = log1mexp(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    for xi, yi in zip([-0.5, -0.7, -1.0, -50.0], y[2:6].tolist()):
        assert yi == pytest.approx(math.log1p(-math.exp(xi)), rel=1e-6, abs=1e-12)


# --- the trainer on a tiny model -----------------------------------------------------------------


def _examples(tokenizer):
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return [
        {
            "prompt_ids": enc("What is two plus two?"),
            "chosen_ids": enc(" Four."),
            "rejected_ids": enc(" Five, I think."),
        },
        {
            "prompt_ids": enc("Name a colour."),
            "chosen_ids": enc(" Blue is a colour."),
            "rejected_ids": enc(" Dog."),
        },
    ]


@pytest.fixture(scope="module")
def batch(tokenizer):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(_examples(tokenizer))


def _trainer(tokenizer, tmp_path, kind, **kw):
    from transformers import TrainingArguments

    from lmforge.models.scratch import init_model

    model = init_model(tokenizer, preset="tiny", seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    defaults = {
        "orpo": {"beta": 0.1},
        "simpo": {"beta": 2.0, "gamma": 0.5},
        "cpo": {"beta": 0.1, "alpha": 1.0},
    }
    return RefFreePreferenceTrainer(model=model, args=args, loss_type=kind, **{**defaults[kind], **kw})


def _independent_logps(model, batch):
    """Per-sequence completion log-prob sums and token counts, one token at a time."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    sums, counts = [], []
    for i in range(batch["input_ids"].shape[0]):
        total, n = 0.0, 0
        for t in range(1, batch["input_ids"].shape[1]):
            if batch["completion_mask"][i, t]:
                total += float(logprobs[i, t - 1, batch["input_ids"][i, t]])
                n += 1
        sums.append(total)
        counts.append(n)
    return sums, counts


def test_collated_batch_layout(batch, tokenizer):
    ex = _examples(tokenizer)
    assert batch["input_ids"].shape[0] == 4
    assert batch["completion_mask"].sum(1).tolist() == [len(e["chosen_ids"]) for e in ex] + [
        len(e["rejected_ids"]) for e in ex
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_stage_loss_matches_independent_logps(kind, batch, tokenizer, tmp_path, one_thread):
    trainer = _trainer(tokenizer, tmp_path, kind, label_smoothing=0.1)
    model = trainer.model
    model.eval()
    sums, counts = _independent_logps(model, batch)
    with torch.no_grad():
        loss, _ = trainer._stage_loss(model, dict(batch))
    assert loss.ndim == 0 and torch.isfinite(loss)
    b = len(sums) // 2
    nll = -sum(sums[:b]) / sum(counts[:b])
    want, per_pair = preference_loss(
        kind,
        torch.tensor(sums[:b], dtype=F64),
        torch.tensor(sums[b:], dtype=F64),
        torch.tensor(counts[:b]),
        torch.tensor(counts[b:]),
        torch.tensor(nll, dtype=F64),
        beta=trainer.beta,
        gamma=trainer.gamma,
        alpha=trainer.alpha,
        label_smoothing=0.1,
    )
    assert float(loss) == pytest.approx(float(want), abs=1e-5, rel=1e-5)
    metrics = trainer._metrics["eval"]
    assert metrics["logps/chosen"][-1] == pytest.approx(sum(sums[:b]) / b, abs=1e-4)
    assert metrics["nll_loss"][-1] == pytest.approx(nll, abs=1e-5)
    margin = float((per_pair["chosen_rewards"] - per_pair["rejected_rewards"]).mean())
    assert metrics["rewards/margins"][-1] == pytest.approx(margin, abs=1e-5)
    expected = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}
    expected |= {"logps/chosen", "logps/rejected", "nll_loss"}
    if kind == "orpo":
        expected |= {"log_odds_ratio", "log_odds_chosen"}
    assert set(metrics) == expected
    assert not trainer._metrics["train"]


def test_compute_loss_and_prediction_step_go_through_the_mixin(batch, tokenizer, tmp_path, one_thread):
    trainer = _trainer(tokenizer, tmp_path, "orpo")
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    assert loss.ndim == 0 and loss.requires_grad
    assert trainer._step_tokens == int(batch["completion_mask"].sum())  # the mixin counted the tokens
    assert len(trainer._metrics["train"]["rewards/accuracies"]) == 1
    model.eval()
    eval_loss, logits, labels = trainer.prediction_step(model, dict(batch), prediction_loss_only=False)
    assert logits is None and labels is None
    assert float(eval_loss) == pytest.approx(float(loss.detach()), abs=1e-5)
    assert len(trainer._metrics["eval"]["log_odds_chosen"]) == 1


def test_unknown_loss_type_fails_at_construction(tokenizer, tmp_path):
    from transformers import TrainingArguments

    from lmforge.models.scratch import init_model

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    with pytest.raises(LmforgeError, match="loss_type 'ipo'"):
        RefFreePreferenceTrainer(
            model=init_model(tokenizer, preset="tiny"), args=args, loss_type="ipo", beta=0.1
        )


@pytest.mark.parametrize("kind", KINDS)
def test_short_optimisation_raises_the_margin(kind, batch, tokenizer, tmp_path, one_thread):
    trainer = _trainer(tokenizer, tmp_path, kind)
    model = trainer.model
    model.train()  # the tiny preset has no dropout, so train mode is deterministic

    def margin() -> float:
        return trainer._metrics["train"]["rewards/margins"][-1]

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = trainer._stage_loss(model, dict(batch))
        losses.append(float(loss.detach()))
        if len(losses) == 1:
            start = margin()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        trainer._stage_loss(model, dict(batch))
    assert margin() > start + 0.1
    assert losses[-1] < losses[0]
    assert trainer._metrics["train"]["rewards/accuracies"][-1] == 1.0


def test_trainer_train_and_evaluate_log_the_stage_metrics(tokenizer, tmp_path, one_thread):
    """Trainer.train with the default remove_unused_columns=True, accumulation and an eval pass."""
    import json

    from datasets import Dataset
    from transformers import TrainingArguments
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from lmforge.models.scratch import init_model
    from lmforge.training.trainer import MetricsCallback

    args = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2, per_device_train_batch_size=2,
        gradient_accumulation_steps=2, logging_steps=1, eval_strategy="steps", eval_steps=2,
        save_strategy="no", learning_rate=1e-3, dataloader_pin_memory=False,
    )  # fmt: skip
    ds = Dataset.from_list(_examples(tokenizer) * 4)
    trainer = RefFreePreferenceTrainer(
        model=init_model(tokenizer, preset="tiny", seed=0),
        args=args,
        train_dataset=ds,
        eval_dataset=ds,
        data_collator=DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id),
        loss_type="orpo",
        beta=0.1,
    )
    trainer.add_callback(MetricsCallback(trainer, str(tmp_path)))
    trainer.train()
    records = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert math.isfinite(r["loss"]) and r["tokens"] > 0
        # the step loss is the mean of its micro-batch losses: nll + beta * mean(-log σ(log_odds))
        assert r["loss"] == pytest.approx(r["nll_loss"] - 0.1 * r["log_odds_ratio"], rel=1e-4)
        assert {"rewards/margins", "rewards/accuracies", "logps/chosen", "log_odds_chosen"} <= set(r)
    evals = [r for r in records if "eval_loss" in r]
    assert evals and "eval_rewards/margins" in evals[-1] and math.isfinite(evals[-1]["eval_loss"])


def test_moe_router_aux_loss_is_added_and_logged(batch, tokenizer, tmp_path, one_thread):
    from transformers import TrainingArguments

    from lmforge.models.scratch import init_model

    model = init_model(tokenizer, preset="tiny", arch="qwen3_moe", seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = RefFreePreferenceTrainer(model=model, args=args, loss_type="simpo", beta=2.0, gamma=0.5)
    model.train()
    loss, outputs = trainer._stage_loss(model, dict(batch))
    aux = float(outputs.aux_loss.detach())
    assert aux > 0
    coef = model.config.router_aux_loss_coef
    sums, counts = _independent_logps(model, batch)
    want, _ = preference_loss(
        "simpo",
        torch.tensor(sums[:2], dtype=F64),
        torch.tensor(sums[2:], dtype=F64),
        torch.tensor(counts[:2]),
        torch.tensor(counts[2:]),
        torch.tensor(0.0, dtype=F64),
        beta=2.0,
        gamma=0.5,
    )
    assert float(loss.detach()) == pytest.approx(float(want) + coef * aux, abs=1e-5)
    trainer.compute_loss(model, dict(batch))
    assert trainer._step_aux > 0  # the mixin read aux_loss from the returned outputs
