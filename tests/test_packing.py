"""packing.py: full rows, position runs restart per document, no label crosses a document, collators."""

import random

import pytest
import torch
from datasets import Dataset

from lmforge.data.packing import (
    IGNORE_INDEX,
    PackedCollator,
    PaddingCollator,
    add_lengths,
    pack_documents,
    padding_waste_unpacked,
)

PAD = 0


def make_docs(num_docs, seed=0, max_len=40):
    """Documents with globally unique token ids (so each one can be traced after packing)."""
    rng = random.Random(seed)
    docs, next_id = [], 1
    for _ in range(num_docs):
        n = rng.randint(1, max_len)
        docs.append(list(range(next_id, next_id + n)))
        next_id += n
    return docs


def runs(position_ids):
    """Split one row's positions into (start, end) runs that each restart at 0."""
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return list(zip(starts[:-1], starts[1:]))


@pytest.mark.parametrize("seq_len,batch_size", [(16, 1000), (32, 7), (64, 3)])
def test_pack_invariants(seq_len, batch_size):
    docs = make_docs(60, seed=seq_len)
    ds = Dataset.from_dict({"input_ids": docs, "source": ["x"] * len(docs)})
    packed, stats = pack_documents(ds, seq_len, pad_id=PAD, batch_size=batch_size)
    assert packed.column_names == ["input_ids", "labels", "position_ids"]
    rows = packed.with_format("numpy")[:]
    ids, labels, pos = rows["input_ids"], rows["labels"], rows["position_ids"]
    assert ids.shape == labels.shape == pos.shape == (len(packed), seq_len)
    # every run restarts at 0 and counts up by one; its first label is masked
    for r in range(len(packed)):
        for start, end in runs(pos[r].tolist()):
            assert pos[r, start:end].tolist() == list(range(end - start))
    assert (labels[pos == 0] == IGNORE_INDEX).all()
    assert pos[:, 0].tolist() == [0] * len(packed)
    # a label is either -100 or the token itself, and never crosses a document boundary
    real = ids != PAD
    assert ((labels == IGNORE_INDEX) | (labels == ids)).all()
    for r in range(len(packed)):
        for start, end in runs(pos[r].tolist()):
            run = ids[r, start:end]
            run = run[run != PAD]
            if len(run):  # tokens of a run are consecutive ids of ONE document
                assert (run[1:] - run[:-1] == 1).all()
    # every document token appears exactly once, in order
    flat = ids[real].tolist()
    assert flat == [t for d in docs for t in d]
    # stats
    total = sum(len(d) for d in docs)
    assert stats.num_docs == 60 and stats.num_tokens == total
    assert stats.num_sequences == len(packed)
    assert stats.num_padding == len(packed) * seq_len - total == int((~real).sum())
    assert stats.padding_waste == pytest.approx(stats.num_padding / (len(packed) * seq_len))


def test_long_document_is_split_into_fresh_runs():
    ds = Dataset.from_dict({"input_ids": [list(range(1, 26))]})
    packed, stats = pack_documents(ds, 10)
    rows = packed.with_format("numpy")[:]
    assert rows["input_ids"].tolist() == [
        list(range(1, 11)),
        list(range(11, 21)),
        list(range(21, 26)) + [PAD] * 5,
    ]
    assert rows["position_ids"].tolist() == [
        list(range(10)),
        list(range(10)),
        list(range(5)) + list(range(5)),
    ]
    assert rows["labels"][:, 0].tolist() == [IGNORE_INDEX] * 3
    assert stats.num_padding == 5 and stats.padding_waste == pytest.approx(5 / 30)


def test_transformers_sees_one_block_per_document():
    from transformers.masking_utils import find_packed_sequence_indices

    ds = Dataset.from_dict({"input_ids": [[5, 6, 7], [8, 9], [10, 11, 12, 13]]})
    packed, _ = pack_documents(ds, 6)
    batch = PackedCollator()([packed[i] for i in range(len(packed))])
    seq_idx = find_packed_sequence_indices(batch["position_ids"])
    assert seq_idx.tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 1]]  # row 2: doc tail, then padding


def test_padding_waste_unpacked():
    assert padding_waste_unpacked([], 8) == 0.0
    assert padding_waste_unpacked([8, 8], 8) == 0.0
    assert padding_waste_unpacked([2, 4, 20], 8) == pytest.approx(1 - (2 + 4 + 8) / 24)
    docs = make_docs(200)
    _, stats = pack_documents(Dataset.from_dict({"input_ids": docs}), 64)
    assert stats.padding_waste < padding_waste_unpacked([len(d) for d in docs], 64)


def test_add_lengths():
    ds = add_lengths(Dataset.from_dict({"input_ids": [[1], [1, 2, 3]]}))
    assert ds["lengths"] == [1, 3]


def test_packed_collator():
    rows = [{"input_ids": [1, 2], "labels": [-100, 2], "position_ids": [0, 1], "extra": "x"}] * 3
    batch = PackedCollator()(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert all(t.dtype == torch.long and t.shape == (3, 2) for t in batch.values())


def test_padding_collator():
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4]}]
    batch = PaddingCollator(pad_id=9)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    batch = PaddingCollator(pad_id=0, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 8) and batch["attention_mask"].sum().item() == 4


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="input_ids"):
        pack_documents(Dataset.from_dict({"text": ["a"]}), 8)
    with pytest.raises(ValueError, match="at least 2"):
        pack_documents(Dataset.from_dict({"input_ids": [[1]]}), 1)


@pytest.mark.parametrize("use_cache", [False, True])
def test_packed_rows_give_each_document_its_unpacked_loss(tmp_path, tokenizer, use_cache):
    """Through the trainer's own loss path: every document packed into a shared row gets exactly
    the loss it gets alone (no attention across documents), within fp32 tolerance. Also with
    `--use_cache true`, under which transformers would skip the per-document mask."""
    from transformers import TrainingArguments

    from lmforge.models.scratch import init_model
    from lmforge.training.trainer import LmforgeTrainer

    torch.manual_seed(0)
    docs = [torch.randint(5, len(tokenizer), (n,)).tolist() for n in (9, 5, 12, 7, 3, 11, 6)]
    packed, _ = pack_documents(Dataset.from_dict({"input_ids": docs}), 24, pad_id=tokenizer.pad_token_id)
    batch = PackedCollator()([packed[i] for i in range(len(packed))])
    model = init_model(tokenizer, preset="tiny", seed=0).float()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", use_cache=use_cache)
    trainer = LmforgeTrainer(model=model, args=args)
    model.train()  # as in training (dropout is 0 in the presets)
    with torch.no_grad():
        _, out = trainer.compute_loss(model, dict(batch), return_outputs=True)
        shared_causal = model(input_ids=batch["input_ids"], use_cache=False).logits  # no document mask

    def doc_loss(logits, ids):  # mean next-token loss of one document, (n, V) logits
        return torch.nn.functional.cross_entropy(logits[:-1], torch.as_tensor(ids[1:]))

    row_of, start, checked, leaks = 0, 0, 0, 0
    for ids in docs:
        if start + len(ids) > 24:  # the pack cut this document at the row end: not a whole one
            row_of, start = row_of + 1, start + len(ids) - 24
            continue
        span = slice(start, start + len(ids))
        assert batch["input_ids"][row_of, span].tolist() == ids
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        packed_loss = doc_loss(out.logits[row_of, span], ids)
        torch.testing.assert_close(packed_loss, doc_loss(alone, ids), atol=1e-5, rtol=1e-5)
        checked += 1
        leaks += not torch.allclose(
            doc_loss(shared_causal[row_of, span], ids), doc_loss(alone, ids), atol=1e-3
        )
        start += len(ids)
    assert checked >= 5
    assert leaks >= 3  # without the document mask later documents would attend to earlier ones
