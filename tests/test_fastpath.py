"""Fast paths (issue 10): the chunked LM loss (same loss and gradients as transformers' plain path,
never a (B, T, V) logits tensor), padding-free batches (same loss as a padded batch, no row attends
to another), and the speed flags reaching TrainingArguments (fused AdamW by default,
--torch_compile, --gradient_checkpointing, --use_liger_kernel with a one-line error on CPU)."""

import json
import tempfile

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lmforge.data.packing import FlatteningCollator, PackedCollator, PaddingCollator, pack_documents
from lmforge.errors import LmforgeError
from lmforge.models.scratch import init_model
from lmforge.training.loss import head_of, linear_cross_entropy
from lmforge.training.trainer import LmforgeTrainer

CHUNK = 7  # smaller than a batch's labelled tokens: several chunks, the last one partial


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _trainer(model, chunk, **args):
    from transformers import TrainingArguments

    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", **args)
    return LmforgeTrainer(model=model, args=targs, loss_chunk_size=chunk)


def _rows(tokenizer, lengths=(9, 5, 12, 7, 3, 11), prompt=3, seed=0):
    """Chat-like rows: the first `prompt` tokens of each carry no label."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(5, len(tokenizer), (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * min(prompt, n) + ids[prompt:]})
    return rows


def _loss_and_grads(trainer, model, batch, num_items=None):
    model.zero_grad(set_to_none=True)
    model.train()
    loss = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()}, num_items_in_batch=num_items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_same(a, b):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-6, msg=name)


# --- the chunked loss itself -------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 5, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
def test_linear_cross_entropy_equals_full_logits(chunk, with_bias, with_weights):
    g = torch.Generator().manual_seed(1)
    B, T, H, V = 3, 11, 16, 50
    hidden = torch.randn(B, T, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    bias = torch.randn(V, generator=g, requires_grad=True) if with_bias else None
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.4] = -100
    weights = torch.rand(B, T, generator=g) + 0.5 if with_weights else None

    total, n = linear_cross_entropy(hidden, weight, labels, bias=bias, weights=weights, chunk_size=chunk)
    total.backward()
    got = [total.detach()] + [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None

    logits = torch.nn.functional.linear(hidden, weight, bias)[:, :-1]
    target = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), target.reshape(-1), ignore_index=-100, reduction="none"
    ).view_as(target)
    if weights is not None:
        ce = ce * weights[:, 1:]
    want_total = ce.sum()
    want_total.backward()
    want = [want_total.detach()] + [t.grad for t in (hidden, weight, bias) if t is not None]
    assert n == int((target != -100).sum())
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_linear_cross_entropy_without_labels_is_zero_and_connected():
    hidden = torch.randn(2, 4, 8, requires_grad=True)
    weight = torch.randn(10, 8, requires_grad=True)
    total, n = linear_cross_entropy(hidden, weight, torch.full((2, 4), -100))
    total.backward()
    assert n == 0 and float(total.detach()) == 0.0
    assert hidden.grad is not None and weight.grad is not None and float(weight.grad.abs().sum()) == 0.0


# --- through LmforgeTrainer.compute_loss ---------------------------------------------------------
def _batches(tokenizer, rows):
    docs = [r["input_ids"] for r in rows]
    from datasets import Dataset

    packed, _ = pack_documents(Dataset.from_dict({"input_ids": docs}), 24, pad_id=tokenizer.pad_token_id)
    return {
        "padded": PaddingCollator(tokenizer.pad_token_id)(rows),
        "flat": FlatteningCollator()(rows),
        "flat_rows": FlatteningCollator(max_row_tokens=20, pad_id=tokenizer.pad_token_id)(rows),
        "packed": PackedCollator()([packed[i] for i in range(len(packed))]),
    }


@pytest.mark.parametrize("layout", ["padded", "flat", "flat_rows", "packed"])
@pytest.mark.parametrize("num_items", [None, 40])
def test_chunked_loss_equals_plain_loss_and_gradients(tokenizer, layout, num_items):
    """Same loss and gradients as transformers' own loss (fp32 tolerance), for padded, padding-free
    and packed batches, with and without Trainer's `num_items_in_batch` normalisation."""
    model = init_model(tokenizer, preset="tiny", seed=0).float()
    batch = _batches(tokenizer, _rows(tokenizer))[layout]
    chunked = _trainer(model, CHUNK)
    items = None if num_items is None else torch.tensor(num_items)
    got = _loss_and_grads(chunked, model, batch, items)
    assert chunked._heads[id(model)] is not None  # the chunked path really ran
    _assert_same(got, _loss_and_grads(_trainer(model, 0), model, batch, items))


def test_chunked_loss_equals_weighted_loss(tokenizer):
    """distill-reason's per-token weights: the chunked path equals `_weighted_loss`."""
    model = init_model(tokenizer, preset="tiny", seed=0).float()
    rows = _rows(tokenizer)
    for r in rows:
        r["loss_weights"] = [1.0 + (i % 3) for i in range(len(r["input_ids"]))]
    for batch in (PaddingCollator(tokenizer.pad_token_id)(rows), FlatteningCollator()(rows)):
        _assert_same(
            _loss_and_grads(_trainer(model, CHUNK), model, batch),
            _loss_and_grads(_trainer(model, 0), model, batch),
        )


def test_chunked_loss_moe_adds_the_router_loss(tokenizer):
    model = init_model(
        tokenizer, seed=0, arch="qwen3_moe", use_moe=True, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
    ).float()  # fmt: skip
    batch = PaddingCollator(tokenizer.pad_token_id)(_rows(tokenizer))
    _assert_same(
        _loss_and_grads(_trainer(model, CHUNK), model, batch),
        _loss_and_grads(_trainer(model, 0), model, batch),
    )


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
def test_chunked_loss_through_lora_and_fallbacks(tokenizer):
    from peft import LoraConfig, get_peft_model

    batch = FlatteningCollator()(_rows(tokenizer))
    base = init_model(tokenizer, preset="tiny", seed=0).float()
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert head_of(lora) is not None
    _assert_same(
        _loss_and_grads(_trainer(lora, CHUNK), lora, batch),
        _loss_and_grads(_trainer(lora, 0), lora, batch),
    )
    # a LoRA-wrapped head is not a plain Linear: the plain path
    head_lora = get_peft_model(
        init_model(tokenizer, preset="tiny", seed=0), LoraConfig(target_modules=["lm_head"])
    )
    assert head_of(head_lora) is None
    # logit soft-capping between the head and the loss: the plain path
    from transformers import Gemma2Config, Gemma2ForCausalLM

    gemma = Gemma2ForCausalLM(
        Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    )  # fmt: skip
    assert head_of(gemma) is None
    # label smoothing replaces the model's loss: the plain path
    model = init_model(tokenizer, preset="tiny", seed=0)
    assert _trainer(model, CHUNK, label_smoothing_factor=0.1)._chunked_head(model, dict(batch), False) is None
    assert _trainer(model, CHUNK)._chunked_head(model, dict(batch), True) is None  # logits wanted
    assert _trainer(model, CHUNK, torch_compile=True)._chunked_head(model, dict(batch), False) is None


class _Shapes(TorchDispatchMode):
    """Records the largest tensor any op produces whose last dimension is the vocabulary (views of
    the model's own weights, e.g. the head's transpose, are not new memory and are left out)."""

    def __init__(self, model):
        super().__init__()
        self.vocab, self.largest = model.config.vocab_size, 0
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab:
                if t.untyped_storage().data_ptr() not in self.params:
                    self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("chunk", [0, CHUNK])
def test_chunked_loss_never_builds_the_full_logits(tokenizer, chunk):
    """Forward and backward: no op makes more than (chunk x V) vocabulary-sized values; the plain
    path makes (B x T x V)."""
    model = init_model(tokenizer, preset="tiny", seed=0).float()
    batch = PaddingCollator(tokenizer.pad_token_id)(_rows(tokenizer))
    trainer, vocab = _trainer(model, chunk), model.config.vocab_size
    with _Shapes(model) as seen:
        trainer.compute_loss(model, dict(batch)).backward()
    full = batch["input_ids"].numel() * vocab
    if chunk:
        assert 0 < seen.largest <= chunk * vocab < full
    else:
        assert seen.largest >= full


# --- padding-free batches ------------------------------------------------------------------------
def test_flattening_collator_layout(tokenizer):
    rows = _rows(tokenizer)
    flat = FlatteningCollator()(rows)
    assert flat["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
    assert "attention_mask" not in flat
    starts = (flat["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [0, 9, 14, 26, 33, 36]  # one run per row, in batch order
    assert all(flat["labels"][0, s] == -100 for s in starts)
    binned = FlatteningCollator(max_row_tokens=20, pad_id=tokenizer.pad_token_id)(rows)
    real = binned["labels"] != -100
    assert binned["input_ids"].shape[1] <= 20 and binned["input_ids"].shape[0] == 3
    assert int(real.sum()) == int((flat["labels"] != -100).sum())  # every target exactly once
    got = sorted(binned["input_ids"][real].tolist())
    assert got == sorted(flat["input_ids"][flat["labels"] != -100].tolist())


def test_narrower_rows_where_attention_costs_more_than_padding():
    """`attention_weight`: the cap halves while the estimated cost falls, never below the longest
    row; without it the fewest rows of at most max_row_tokens, as before."""
    from lmforge.training.build import row_attention_weight

    def layout(lengths, weight):
        rows = FlatteningCollator(256, 0, weight).bins(lengths)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))  # each row once
        return len(rows), max(sum(lengths[i] for i in r) for r in rows)

    short = [30] * 16  # 480 tokens of short conversations, as SFT on chat data
    assert layout(short, 0.0) == (2, 240)
    weight = 1 / (6 * 192)
    assert layout(short, weight) == (16, 30)  # no padding either way: the narrowest rows win
    uneven = [100, *[20] * 8]  # 2 rows of 140 (280 positions) or 3 of 100 (300: more padding)
    assert layout(uneven, weight) == (2, 140)  # 280 x (1 + 140/1152) < 300 x (1 + 100/1152)
    assert layout(uneven, 1 / (6 * 32)) == (3, 100)  # a narrow model: attention outweighs padding
    assert layout([200, *[20] * 10], weight)[1] >= 200  # never narrower than the longest
    assert layout([40, 40], weight) == (2, 40)  # under the cap: split when that is cheaper
    assert layout([40, 40], 0.0) == (1, 80)
    model = init_model(tokenizer_for_weight(), preset="tiny", seed=0)
    assert row_attention_weight(model) == pytest.approx(1 / (6 * model.config.hidden_size))
    assert row_attention_weight(torch.nn.Linear(2, 2)) == 0.0  # size unknown: no narrower rows


def tokenizer_for_weight():
    from lmforge.models.tokenizer import load_tokenizer

    return load_tokenizer(None)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("max_row_tokens,weight", [(None, 0.0), (20, 0.0), (20, 0.05)])
def test_padding_free_rows_do_not_attend_to_each_other(tokenizer, attn, max_row_tokens, weight):
    """Every row's logits in a padding-free batch equal its logits alone (no cross-row attention),
    and the batch loss equals the padded batch's."""
    model = init_model(tokenizer, preset="tiny", seed=0, attn_implementation=attn).float()
    rows = _rows(tokenizer)
    collator = FlatteningCollator(max_row_tokens, tokenizer.pad_token_id, weight)
    flat = collator(rows)
    trainer = _trainer(model, 0)
    model.train()
    with torch.no_grad():
        loss, out = trainer.compute_loss(model, dict(flat), return_outputs=True)
        padded_loss = trainer.compute_loss(model, dict(PaddingCollator(tokenizer.pad_token_id)(rows)))
        bins = collator.bins([len(r["input_ids"]) for r in rows])
        for r, members in enumerate(bins):
            at = 0
            for i in members:
                ids = rows[i]["input_ids"]
                alone = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
                torch.testing.assert_close(out.logits[r, at : at + len(ids)], alone, atol=1e-5, rtol=1e-5)
                at += len(ids)
    torch.testing.assert_close(loss, padded_loss, atol=1e-5, rtol=1e-5)


# --- flags ---------------------------------------------------------------------------------------
def _training_args(tmp_path, *flags):
    from lmforge.pipeline import resolve_train_config
    from lmforge.training.build import build_training_args

    _, cfg = resolve_train_config("sft", ["--output_dir", str(tmp_path), *flags])
    return cfg, build_training_args(cfg, str(tmp_path))


def test_speed_flags_reach_training_args(tmp_path):
    from lmforge.config.schema import RunArgs
    from lmforge.training.trainer import DEFAULT_LOSS_CHUNK_SIZE

    cfg, args = _training_args(tmp_path)
    assert args.optim == "adamw_torch_fused"  # fused AdamW by default (torch >= 2.8, CPU included)
    assert not args.torch_compile and not args.gradient_checkpointing and not args.use_liger_kernel
    assert cfg["loss_chunk_size"] == DEFAULT_LOSS_CHUNK_SIZE == RunArgs().loss_chunk_size
    assert cfg["padding_free"] is None
    cfg, args = _training_args(
        tmp_path, "--torch_compile", "true", "--gradient_checkpointing", "true", "--optim", "adamw_torch",
        "--loss_chunk_size", "0", "--padding_free", "false",
    )  # fmt: skip
    assert args.torch_compile and args.gradient_checkpointing and args.optim == "adamw_torch"
    assert cfg["loss_chunk_size"] == 0 and cfg["padding_free"] is False


def test_fused_adamw_is_built(tokenizer, tmp_path):
    _, args = _training_args(tmp_path)
    model = init_model(tokenizer, preset="tiny", seed=0)
    from lmforge.training.trainer import LmforgeTrainer

    optimizer = LmforgeTrainer(model=model, args=args).create_optimizer()
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["fused"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_liger_kernel_is_a_one_line_error_on_cpu(tmp_path):
    with pytest.raises(LmforgeError, match="--use_liger_kernel needs a CUDA GPU"):
        _training_args(tmp_path, "--use_liger_kernel", "true")


def test_sft_run_uses_the_fast_paths(synth_dir, tmp_path, monkeypatch):
    """`lmforge train sft` end to end: padding-free batches and the chunked loss by default, and
    --gradient_checkpointing really checkpoints the model."""
    import lmforge.training.build as build
    from lmforge.pipeline import run_train

    seen = {}
    make = build.default_trainer

    def spy(ctx):
        trainer = make(ctx)
        seen["trainer"] = trainer
        return trainer

    monkeypatch.setattr(build, "default_trainer", spy)
    out = tmp_path / "run"
    flags = ["--dataset", str(synth_dir / "sft.jsonl"), "--output_dir", str(out), "--preset", "tiny",
             "--from_weight", "none", "--max_length", "96", "--per_device_train_batch_size", "4",
             "--max_steps", "3", "--learning_rate", "3e-3", "--save_steps", "100", "--report_to", "none",
             "--plot", "false", "--gradient_checkpointing", "true"]  # fmt: skip
    run_train("sft", flags)
    trainer = seen["trainer"]
    assert isinstance(trainer.data_collator, FlatteningCollator)
    assert trainer.data_collator.max_row_tokens == 96  # sdpa on CPU: rows stop at --max_length
    assert trainer.loss_chunk_size == 1024 and trainer._heads[id(trainer.model)] is not None
    assert trainer.model.is_gradient_checkpointing
    losses = [
        json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln
    ]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
