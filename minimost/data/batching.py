"""Batches for the trainer: dynamic padding, length bucketing, packing, and stage mixtures.

MoST pads every sample to 2048 tokens (most-reference.md §6.1); with mini-world sentences of ~12
tokens that would be >95 % padding. Here every batch is padded only to its own longest row
(right padding for training), and batches are drawn from length buckets so rows in a batch have
similar lengths (`padding_fraction` reports what is left). Packing is optional: several examples
of one task share a row, with `doc_ids` so attention never crosses documents.

A batch (INTERFACES.md) is a dict of tensors:

    input_ids       (B, T) long     right-padded with the tokenizer's pad id
    attention_mask  (B, T) bool     True on real tokens
    labels          (B, T) long     -100 on prompt and padding, aligned with input_ids (model shifts)
    task_ids        (B,)   long     index into minimost.config.TASKS
    doc_ids         (B, T) long     packed rows only: document index within the row, -1 on padding

`MixtureSampler` is the trainer's batch source for every stage: per-task pools, mixture weights
(`TrainConfig.mixture`: MoST's stage 1 = ASR 0.4 / TTS 0.4 / text-LM 0.2, §6.5), deterministic from
its seed, and `state_dict()` / `load_state_dict()` resume it exactly mid-run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from minimost.config import TASKS

IGNORE_INDEX = -100
STATE_VERSION = 1


class SamplerError(ValueError):
    """A batch source cannot be built as asked; the message says what to change."""


# --------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------

def _get(ex: Any, key: str):
    return ex[key] if isinstance(ex, Mapping) else getattr(ex, key)


def collate(examples: Sequence[Any], pad_id: int, task_ids: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Right-pad examples (dicts or objects with input_ids / labels) to the longest one in the batch."""
    if not examples:
        raise SamplerError("collate got an empty list of examples.")
    lengths = [len(_get(e, "input_ids")) for e in examples]
    B, T = len(examples), max(lengths)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    for b, (e, n) in enumerate(zip(examples, lengths)):
        input_ids[b, :n] = torch.as_tensor(list(_get(e, "input_ids")), dtype=torch.long)
        labels[b, :n] = torch.as_tensor(list(_get(e, "labels")), dtype=torch.long)
        mask[b, :n] = True
    if task_ids is None:
        task_ids = [TASKS.index(_get(e, "task")) if _has(e, "task") else -1 for e in examples]
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
            "task_ids": torch.as_tensor(list(task_ids), dtype=torch.long)}


def _has(ex: Any, key: str) -> bool:
    return key in ex if isinstance(ex, Mapping) else hasattr(ex, key)


def collate_packed(rows: Sequence[Sequence[Any]], pad_id: int, task_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """Each row is a list of examples laid end to end; `doc_ids` numbers them 0, 1, ... (-1 on padding)."""
    flat = []
    for docs in rows:
        ids, labs, doc = [], [], []
        for d, e in enumerate(docs):
            ids += list(_get(e, "input_ids"))
            labs += list(_get(e, "labels"))
            doc += [d] * len(_get(e, "input_ids"))
        flat.append({"input_ids": ids, "labels": labs, "doc": doc})
    batch = collate(flat, pad_id, task_ids)
    doc_ids = torch.full_like(batch["input_ids"], -1)
    for b, r in enumerate(flat):
        doc_ids[b, :len(r["doc"])] = torch.as_tensor(r["doc"], dtype=torch.long)
    batch["doc_ids"] = doc_ids
    return batch


def pack(examples: Sequence[Any], max_len: int, pad_id: int, task_id: int = -1) -> dict[str, torch.Tensor]:
    """Greedily pack examples, in order, into rows of at most `max_len` tokens (one batch)."""
    rows, row, used = [], [], 0
    for e in examples:
        n = len(_get(e, "input_ids"))
        if n > max_len:
            raise SamplerError(f"an example of {n} tokens does not fit max_len={max_len}.")
        if used + n > max_len:
            rows.append(row)
            row, used = [], 0
        row.append(e)
        used += n
    if row:
        rows.append(row)
    return collate_packed(rows, pad_id, [task_id] * len(rows))


def padding_fraction(batch: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the (B, T) positions of a batch that are padding."""
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()


# --------------------------------------------------------------------------------------------
# Length bucketing for one dataset (evaluation, single-task training)
# --------------------------------------------------------------------------------------------

class LengthBucketSampler:
    """Index batches of similar length: shuffle, cut into mega-batches of `bucket_batches` batches,
    sort each by length, split, shuffle the batch order. Deterministic from (seed, epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, bucket_batches: int = 32,
                 shuffle: bool = True, drop_last: bool = False):
        if len(lengths) == 0:
            raise SamplerError("LengthBucketSampler got an empty dataset.")
        if batch_size <= 0 or bucket_batches <= 0:
            raise SamplerError("batch_size and bucket_batches must be positive.")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.bucket_batches = batch_size, seed, bucket_batches
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        mega = self.batch_size * self.bucket_batches
        out = []
        for start in range(0, n, mega):
            chunk = order[start:start + mega]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            out += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())

    def padding_fraction(self) -> float:
        """Padding fraction over one epoch of these batches (each padded to its own longest row)."""
        real = padded = 0
        for b in self.batches():
            ls = self.lengths[b]
            real += int(ls.sum())
            padded += int(ls.max()) * len(b)
        return 1.0 - real / padded


def eval_batches(examples: Sequence[Any], batch_size: int, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Every example once, length-sorted, dynamically padded (for validation loss)."""
    lengths = [len(_get(e, "input_ids")) for e in examples]
    sampler = LengthBucketSampler(lengths, batch_size, shuffle=False, bucket_batches=max(1, len(lengths)))
    for idx in sampler:
        yield collate([examples[i] for i in idx], pad_id)


# --------------------------------------------------------------------------------------------
# The mixture sampler
# --------------------------------------------------------------------------------------------

def _lengths(pool: Any) -> list[int]:
    column_names = getattr(pool, "column_names", None)
    if column_names is not None and "length" in column_names:
        return pool.with_format("arrow")["length"].to_pylist()     # one Arrow read, honours select()
    return [len(_get(pool[i], "input_ids")) for i in range(len(pool))]


def check_mixture(mixture: Mapping[str, float], pools: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Validate task names, weights (>= 0, sum 1) and that every weighted task has data."""
    unknown = sorted(set(mixture) - set(TASKS))
    if unknown:
        raise SamplerError(f"mixture names unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}.")
    if any(float(w) < 0 for w in mixture.values()):
        raise SamplerError(f"mixture weights must be >= 0, got {dict(mixture)}.")
    total = sum(float(w) for w in mixture.values())
    if abs(total - 1.0) > 1e-6:
        raise SamplerError(f"mixture weights must sum to 1, got {total:.6g} for {dict(mixture)}.")
    if pools is not None:
        unknown = sorted(set(pools) - set(TASKS))
        if unknown:
            raise SamplerError(f"pools name unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}.")
        for task, w in mixture.items():
            if w > 0 and (task not in pools or len(pools[task]) == 0):
                have = [t for t in pools if len(pools[t])]
                raise SamplerError(f"the mixture asks for {task!r} (weight {w}) but there is no data for it; "
                                   f"tasks with data: {', '.join(have) or 'none'}.")
    return {t: float(mixture[t]) for t in TASKS if t in mixture and float(mixture[t]) > 0}


class MixtureSampler:
    """Batches drawn from per-task pools in the proportions of `mixture`, resumable exactly.

    pools: task -> examples (a `datasets.Dataset` with input_ids / labels [/ length] columns, or a
    list of dicts). Examples longer than `max_len` are left out and counted in `skipped`.

    Which task each sequence comes from is decided by a deterministic smooth weighted round robin
    (the task furthest below its share goes next), so the realised mixture never drifts more than
    one sequence per task from the request. Within a task, examples come in a fresh seeded
    permutation every epoch of that pool. `bucket_batches` batches are drawn at a time, sorted by
    length, cut into batches and shuffled (length bucketing). With `packing=True`, each row is
    filled with examples of one task (so `task_ids` stays meaningful) and the mixture counts rows.
    """

    def __init__(self, pools: Mapping[str, Any], mixture: Mapping[str, float], batch_size: int, max_len: int,
                 seed: int = 0, pad_id: int = 0, bucket_batches: int = 32, packing: bool = False):
        if batch_size <= 0 or max_len <= 0 or bucket_batches <= 0:
            raise SamplerError(f"batch_size, max_len and bucket_batches must be positive, got {batch_size}, "
                               f"{max_len}, {bucket_batches}.")
        self.mixture = check_mixture(mixture, pools)
        self.tasks = list(self.mixture)                  # in TASKS order
        self.weights = np.array([self.mixture[t] for t in self.tasks])
        self.batch_size, self.max_len, self.seed = batch_size, max_len, seed
        self.pad_id, self.bucket_batches, self.packing = pad_id, bucket_batches, packing
        # A `datasets.Dataset` is read a batch at a time through its two needed columns (one Arrow
        # `take` per task per batch instead of one row decode per example).
        self.pools = {t: (pools[t].select_columns(["input_ids", "labels"])
                          if hasattr(pools[t], "column_names") else pools[t]) for t in self.tasks}
        self.lengths: dict[str, list[int]] = {}
        self.valid: dict[str, np.ndarray] = {}           # pool indices that fit max_len
        self.skipped: dict[str, int] = {}
        for t in self.tasks:
            ls = _lengths(self.pools[t])
            ok = np.array([i for i, n in enumerate(ls) if n <= max_len], dtype=np.int64)
            if len(ok) == 0:
                raise SamplerError(f"every example of {t!r} is longer than max_len={max_len} "
                                   f"(shortest: {min(ls)} tokens); raise max_len.")
            self.lengths[t], self.valid[t], self.skipped[t] = ls, ok, len(ls) - len(ok)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self.counts = [0] * len(self.tasks)              # sequences (rows when packing) per task so far
        self.cursors = [[0, 0] for _ in self.tasks]      # (epoch, position) in each task's permutation
        self.buffer: list[list[list[list[int]]]] = []    # pending batches: rows of [task, index] pairs
        self.refills = 0
        self.emitted = 0
        self.real_tokens = 0
        self.padded_tokens = 0

    def _signature(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "weights": [round(w, 9) for w in self.weights.tolist()],
                "batch_size": self.batch_size, "max_len": self.max_len, "seed": self.seed,
                "bucket_batches": self.bucket_batches, "packing": self.packing,
                "pool_sizes": [len(self.lengths[t]) for t in self.tasks]}

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values: save it in the checkpoint; `load_state_dict` continues exactly here."""
        return {"version": STATE_VERSION, "signature": self._signature(), "counts": list(self.counts),
                "cursors": [list(c) for c in self.cursors],
                "buffer": [[[list(p) for p in row] for row in batch] for batch in self.buffer],
                "refills": self.refills, "emitted": self.emitted, "real_tokens": self.real_tokens,
                "padded_tokens": self.padded_tokens}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise SamplerError(f"sampler state version {state.get('version')}, this code reads {STATE_VERSION}.")
        if state["signature"] != self._signature():
            diff = {k: (v, self._signature()[k]) for k, v in state["signature"].items()
                    if self._signature().get(k) != v}
            raise SamplerError(f"sampler state comes from a different configuration: (saved, now) = {diff}.")
        self.counts = list(state["counts"])
        self.cursors = [list(c) for c in state["cursors"]]
        self.buffer = [[[list(p) for p in row] for row in batch] for batch in state["buffer"]]
        self.refills, self.emitted = state["refills"], state["emitted"]
        self.real_tokens, self.padded_tokens = state["real_tokens"], state["padded_tokens"]

    # ------------------------------------------------------------------ drawing
    def _perm(self, k: int, epoch: int) -> np.ndarray:
        key = (k, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4 * len(self.tasks):
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed, TASKS.index(self.tasks[k]), epoch])
            self._perm_cache[key] = self.valid[self.tasks[k]][rng.permutation(len(self.valid[self.tasks[k]]))]
        return self._perm_cache[key]

    def _peek(self, k: int) -> int:
        epoch, pos = self.cursors[k]
        return int(self._perm(k, epoch)[pos])

    def _advance(self, k: int) -> None:
        self.cursors[k][1] += 1
        if self.cursors[k][1] == len(self.valid[self.tasks[k]]):
            self.cursors[k] = [self.cursors[k][0] + 1, 0]

    def _next_task(self) -> int:
        total = sum(self.counts) + 1
        deficit = self.weights * total - np.array(self.counts)
        k = int(np.argmax(deficit))                      # ties -> the earliest task in TASKS order
        self.counts[k] += 1
        return k

    def _refill(self) -> None:
        n_rows = self.batch_size * self.bucket_batches
        rows: list[list[list[int]]] = []
        for _ in range(n_rows):
            k = self._next_task()
            row, used = [], 0
            while True:
                i = self._peek(k)
                n = self.lengths[self.tasks[k]][i]
                if row and (not self.packing or used + n > self.max_len):
                    break
                row.append([k, i])
                used += n
                self._advance(k)
            rows.append(row)
        size = [sum(self.lengths[self.tasks[k]][i] for k, i in row) for row in rows]
        order = sorted(range(n_rows), key=lambda r: (size[r], r))   # length buckets
        batches = [[rows[r] for r in order[s:s + self.batch_size]] for s in range(0, n_rows, self.batch_size)]
        rng = np.random.default_rng([self.seed, 1_000_003, self.refills])
        self.buffer = [batches[j] for j in rng.permutation(len(batches))]
        self.refills += 1

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next batch (see the module docstring for its keys)."""
        if not self.buffer:
            self._refill()
        batch_rows = self.buffer.pop(0)
        task_ids = [TASKS.index(self.tasks[row[0][0]]) for row in batch_rows]
        examples = iter(self._fetch([pair for row in batch_rows for pair in row]))
        docs = [[next(examples) for _ in row] for row in batch_rows]
        if self.packing:
            batch = collate_packed(docs, self.pad_id, task_ids)
        else:
            batch = collate([d[0] for d in docs], self.pad_id, task_ids)
        self.emitted += 1
        self.real_tokens += int(batch["attention_mask"].sum())
        self.padded_tokens += batch["attention_mask"].numel()
        return batch

    def _fetch(self, pairs: list[list[int]]) -> list[Any]:
        """Examples for (task index, example index) pairs, in order, one read per task."""
        out: list[Any] = [None] * len(pairs)
        by_task: dict[int, list[int]] = {}
        for j, (k, _) in enumerate(pairs):
            by_task.setdefault(k, []).append(j)
        for k, js in by_task.items():
            pool = self.pools[self.tasks[k]]
            idx = [pairs[j][1] for j in js]
            if hasattr(pool, "column_names"):
                cols = pool[idx]
                for j, ids, labs in zip(js, cols["input_ids"], cols["labels"]):
                    out[j] = {"input_ids": ids, "labels": labs}
            else:
                for j, i in zip(js, idx):
                    out[j] = pool[i]
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------ reporting
    @property
    def padding_fraction(self) -> float:
        """Padding fraction over every batch emitted so far."""
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def realised_mixture(self) -> dict[str, float]:
        """Share of each task among the sequences (rows when packing) drawn so far."""
        total = sum(self.counts)
        return {t: (c / total if total else 0.0) for t, c in zip(self.tasks, self.counts)}
