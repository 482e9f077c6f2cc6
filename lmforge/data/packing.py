"""Pack tokenised documents into full fixed-length rows, and the collators that batch them.

`pack_documents` concatenates the documents of each `.map` batch (greedy, as HF's run_clm and
MiniMind's pretrain data do) and cuts the stream into rows of exactly `seq_len` tokens. Each row
carries `position_ids` that restart at 0 at every document start and at every row start (a
document cut by a row boundary continues as a fresh run). With no attention mask, transformers 5
turns such position_ids into a block-diagonal mask (`masking_utils.find_packed_sequence_indices`),
and flash-attention varlen kernels read the same runs: no token attends across documents.
The label of every run's first token is -100, so no token is trained to follow another document.

Remainder policy: the last partial row of every map batch is padded (pad_id, labels -100, its
own position run) rather than dropped, so no document token is lost; the waste is at most one
row per `batch_size` documents and is reported in `PackStats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa
    import torch

IGNORE_INDEX = -100


@dataclass
class PackStats:
    """What packing produced; `padding_waste` is the padded fraction of all row positions."""

    num_docs: int
    num_sequences: int
    num_tokens: int
    num_padding: int
    seq_len: int

    @property
    def padding_waste(self) -> float:
        total = self.num_sequences * self.seq_len
        return self.num_padding / total if total else 0.0


def _pack_whole(batch: pa.Table, seq_len: int, pad_id: int) -> pa.Table:
    """Pack documents (each <= seq_len) into rows without splitting any: a document that does not
    fit in the current row starts the next one, and each row's tail is padded. Chat rows need this:
    a conversation cut in two would leave its second half with answers but no question."""
    import numpy as np
    import pyarrow as pa

    docs = batch.column("input_ids").combine_chunks()
    ids = docs.flatten().to_numpy(zero_copy_only=False).astype(np.int32)  # (N,)
    labels = batch.column("labels").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    lengths = docs.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(lengths) and lengths.max() > seq_len:
        raise ValueError(f"a row of {int(lengths.max())} tokens does not fit in --max_length {seq_len}")
    row_of = np.empty(len(lengths), dtype=np.int64)
    start_in_row = np.empty(len(lengths), dtype=np.int64)
    row, used = 0, 0
    for i, n in enumerate(lengths.tolist()):  # sequential greedy: keeps the data order
        if used + n > seq_len:
            row, used = row + 1, 0
        row_of[i], start_in_row[i] = row, used
        used += n
    num_rows = row + 1 if len(lengths) else 0
    doc_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    within = np.arange(len(ids)) - doc_start
    dest = np.repeat(row_of * seq_len + start_in_row, lengths) + within
    out_ids = np.full(num_rows * seq_len, pad_id, dtype=np.int32)
    out_labels = np.full(num_rows * seq_len, IGNORE_INDEX, dtype=np.int32)
    slot = np.arange(num_rows * seq_len) % seq_len
    used_per_row = np.zeros(num_rows, dtype=np.int64)
    np.add.at(used_per_row, row_of, lengths)
    out_pos = (slot - np.repeat(used_per_row, seq_len)).astype(np.int32)  # padding: a run of its own
    out_ids[dest], out_labels[dest], out_pos[dest] = ids, labels, within.astype(np.int32)
    out_labels[dest[within == 0]] = IGNORE_INDEX
    offsets = pa.array(np.arange(0, num_rows * seq_len + 1, seq_len, dtype=np.int32))
    columns = {"input_ids": out_ids, "labels": out_labels, "position_ids": out_pos}
    return pa.table({k: pa.ListArray.from_arrays(offsets, pa.array(v)) for k, v in columns.items()})


def _pack_batch(batch: pa.Table, seq_len: int, pad_id: int) -> pa.Table:
    """Concatenate one batch of documents and cut it into `seq_len` rows (numpy on Arrow buffers)."""
    import numpy as np
    import pyarrow as pa

    docs = batch.column("input_ids").combine_chunks()
    ids = docs.flatten().to_numpy(zero_copy_only=False).astype(np.int32)  # (N,) all tokens, in order
    lengths = docs.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    total = len(ids)
    num_rows = -(-total // seq_len)
    idx = np.arange(total)
    doc_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    row_start = (idx // seq_len) * seq_len
    positions = (idx - np.maximum(doc_start, row_start)).astype(np.int32)  # restart at docs and rows
    labels = ids.copy()
    labels[positions == 0] = IGNORE_INDEX
    pad = num_rows * seq_len - total
    if pad:
        ids = np.concatenate([ids, np.full(pad, pad_id, dtype=np.int32)])
        labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int32)])
        positions = np.concatenate([positions, np.arange(pad, dtype=np.int32)])  # padding: a run of its own
    offsets = pa.array(np.arange(0, num_rows * seq_len + 1, seq_len, dtype=np.int32))
    columns = {"input_ids": ids, "labels": labels, "position_ids": positions}
    return pa.table({k: pa.ListArray.from_arrays(offsets, pa.array(v)) for k, v in columns.items()})


def _count_tokens(ds: datasets.Dataset, column: str = "input_ids") -> int:
    import pyarrow.compute as pc

    total = 0
    for table in ds.select_columns([column]).with_format("arrow").iter(batch_size=65536):
        total += int(pc.sum(pc.list_value_length(table[column])).as_py() or 0)
    return total


def pack_documents(
    ds: datasets.Dataset,
    seq_len: int,
    *,
    pad_id: int = 0,
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> tuple[datasets.Dataset, PackStats]:
    """Pack `ds` (column `input_ids`, one document per row, bos/eos included) into `seq_len` rows.

    Text documents are concatenated and cut at `seq_len` (a long one continues in the next row).
    Rows that carry `labels` (chat rows with their loss masks) are packed whole, never split.

    Output columns: `input_ids`, `labels`, `position_ids` (int32 lists of exactly `seq_len`).
    """
    from datasets import Features, List, Value

    if seq_len < 2:
        raise ValueError(f"--max_seq_len must be at least 2 to pack; got {seq_len}")
    if "input_ids" not in ds.column_names:
        raise ValueError(f"pack_documents needs an 'input_ids' column; got {ds.column_names}")
    features = Features({k: List(Value("int32")) for k in ("input_ids", "labels", "position_ids")})
    packed = (
        ds.with_format("arrow")
        .map(
            _pack_whole if "labels" in ds.column_names else _pack_batch,
            batched=True,
            batch_size=batch_size,
            fn_kwargs={"seq_len": seq_len, "pad_id": pad_id},
            remove_columns=ds.column_names,
            features=features,
            num_proc=num_proc,
            desc="Packing",
        )
        .with_format(None)
    )
    num_tokens = _count_tokens(ds)
    stats = PackStats(
        num_docs=len(ds),
        num_sequences=len(packed),
        num_tokens=num_tokens,
        num_padding=len(packed) * seq_len - num_tokens,
        seq_len=seq_len,
    )
    return packed, stats


def pack_stream(
    docs: datasets.IterableDataset, seq_len: int, *, pad_id: int = 0, batch_size: int = 1000
) -> datasets.IterableDataset:
    """`pack_documents` for `--streaming`: the same packing, applied lazily batch by batch."""
    import pyarrow as pa

    def pack(batch: dict[str, list]) -> dict[str, list]:
        table = _pack_batch(
            pa.table({"input_ids": pa.array(batch["input_ids"], pa.list_(pa.int32()))}), seq_len, pad_id
        )
        return table.to_pydict()

    return docs.map(pack, batched=True, batch_size=batch_size, remove_columns=["input_ids"])


def padding_waste_unpacked(lengths: Sequence[int], max_len: int) -> float:
    """Fraction of positions that are padding when every row is padded (or cut) to `max_len`.

    This is what MiniMind's pad-every-row-to-max_seq_len loader spends, for comparison.
    """
    if not len(lengths):
        return 0.0
    used = sum(min(int(n), max_len) for n in lengths)
    return 1.0 - used / (len(lengths) * max_len)


def add_lengths(
    ds: datasets.Dataset, column: str = "input_ids", *, num_proc: int | None = None
) -> datasets.Dataset:
    """Add a `lengths` column (for `group_by_length` / `length_column_name="lengths"`)."""
    return ds.map(
        lambda b: {"lengths": [len(x) for x in b[column]]}, batched=True, num_proc=num_proc, desc="Lengths"
    )


class PackedCollator:
    """Stack packed rows into (B, T) long tensors; no attention_mask, so position_ids drive masking."""

    keys = ("input_ids", "labels", "position_ids")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        out = {
            k: torch.tensor([f[k] for f in features], dtype=torch.long) for k in self.keys if k in features[0]
        }
        if "loss_weights" in features[0]:  # distill-reason marker weights on packed rows
            out["loss_weights"] = torch.tensor([f["loss_weights"] for f in features], dtype=torch.float32)
        return out


class PaddingCollator:
    """Right-pad variable-length rows: input_ids with `pad_id`, labels with -100, plus attention_mask.

    Rows without `labels` train on every token. `pad_to_multiple_of` rounds the batch length up
    (8 or 64 suits tensor cores).
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None, label_pad_id: int = IGNORE_INDEX):
        self.pad_id, self.pad_to_multiple_of, self.label_pad_id = pad_id, pad_to_multiple_of, label_pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = -(-longest // m) * m
        batch = len(features)
        input_ids = torch.full((batch, longest), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((batch, longest), self.label_pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, longest), dtype=torch.long)
        weighted = "loss_weights" in features[0]
        weights = torch.zeros((batch, longest), dtype=torch.float32) if weighted else None
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(f.get("labels", f["input_ids"]), dtype=torch.long)
            attention_mask[i, :n] = 1
            if weighted:
                weights[i, :n] = torch.as_tensor(f["loss_weights"], dtype=torch.float32)
        out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if weighted:
            out["loss_weights"] = weights  # per-token loss weights (distill-reason markers); 0 on padding
        return out


class FlatteningCollator:
    """Padding-free batches: the batch's rows laid end to end, with no padding between them and no
    attention mask; `position_ids` restart at 0 at every row start, so transformers keeps each row
    to itself exactly as for packed rows (a block-diagonal mask with sdpa/eager, varlen kernels with
    flash attention). The first label of every row is -100: nothing is trained to follow the
    previous row (that position is never a target in a padded batch either). The batch holds the
    same rows as a padded one, so the loss is the same; compute and memory follow its real tokens.

    `max_row_tokens=None` puts everything in ONE row (1, total): right for flash-attention varlen
    kernels, which only compute within each row. sdpa and eager attend over the whole row under a
    mask, an N x N cost, so with `max_row_tokens` the rows are spread over the fewest rows of at
    most that many tokens (balanced, longest first), each tail padded (pad_id, labels -100, its own
    position run): attention then costs no more per token than a packed row of that length.
    """

    def __init__(self, max_row_tokens: int | None = None, pad_id: int = 0, attention_weight: float = 0.0):
        self.max_row_tokens, self.pad_id = max_row_tokens, pad_id
        self.attention_weight = attention_weight

    def bins(self, lengths: list[int]) -> list[list[int]]:
        """Indices of the batch rows that share each output row (batch order kept within one).

        With `attention_weight` (a position's attention cost per token of row width, relative to the
        rest of its cost) narrower rows are tried too, halving the cap down to the longest row, and
        the layout with the least estimated cost, rows x width x (1 + width x attention_weight), is
        taken: a masked row's attention is quadratic in its width, padding is linear."""
        if self.max_row_tokens is None or sum(lengths) <= self.max_row_tokens and not self.attention_weight:
            return [list(range(len(lengths)))]
        longest = max(lengths)
        cap = max(self.max_row_tokens, longest)
        best = _balanced_bins(lengths, cap)
        while self.attention_weight and cap // 2 >= longest:
            cap //= 2
            layout = _balanced_bins(lengths, cap)
            if self._cost(lengths, layout) < self._cost(lengths, best):
                best = layout
        return best

    def _cost(self, lengths: list[int], layout: list[list[int]]) -> float:
        width = max(sum(lengths[i] for i in row) for row in layout)
        return len(layout) * width * (1.0 + width * self.attention_weight)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        bins = self.bins(lengths)
        width = max(sum(lengths[i] for i in b) for b in bins)
        shape = (len(bins), width)
        input_ids = torch.full(shape, self.pad_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        weighted = "loss_weights" in features[0]
        weights = torch.zeros(shape, dtype=torch.float32) if weighted else None
        for r, members in enumerate(bins):
            at = 0
            for i in members:
                f, n = features[i], lengths[i]
                input_ids[r, at : at + n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
                labels[r, at : at + n] = torch.as_tensor(f.get("labels", f["input_ids"]), dtype=torch.long)
                labels[r, at] = IGNORE_INDEX
                position_ids[r, at : at + n] = torch.arange(n)
                if weighted:
                    weights[r, at : at + n] = torch.as_tensor(f["loss_weights"], dtype=torch.float32)
                at += n
            position_ids[r, at:] = torch.arange(width - at)  # padding: a run of its own
        out = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if weighted:
            out["loss_weights"] = weights
        return out


def _balanced_bins(lengths: list[int], cap: int) -> list[list[int]]:
    """The fewest rows of at most `cap` tokens (cap >= the longest), longest first onto the
    least-loaded row; indices in batch order within a row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    k = -(-sum(lengths) // cap)
    while True:
        loads, members = [0] * k, [[] for _ in range(k)]
        for i in order:
            j = min(range(k), key=loads.__getitem__)
            loads[j] += lengths[i]
            members[j].append(i)
        if max(loads) <= cap:
            return [sorted(m) for m in members if m]
        k += 1


def collator_for(
    columns: Sequence[str],
    pad_id: int,
    *,
    padding_free: bool = False,
    max_row_tokens: int | None = None,
    attention_weight: float = 0.0,
) -> PackedCollator | PaddingCollator | FlatteningCollator:
    """Packed rows (position_ids present) are stacked as they are; anything else is laid end to
    end without padding (`padding_free`, rows of at most `max_row_tokens`, narrower where
    `attention_weight` says they cost less) or right-padded."""
    if "position_ids" in columns:
        return PackedCollator()
    if padding_free:
        return FlatteningCollator(max_row_tokens, pad_id, attention_weight)
    return PaddingCollator(pad_id)
