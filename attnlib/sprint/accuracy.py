"""SPRINT's accuracy claim done as a reviewer expects: a validation split for the regulariser, a
de-duplicated test set, several fine-tuning seeds inside the interval, evaluation at a stated length.

- `dedup_against`: the de-duplication rule. An e-mail duplicates a reference e-mail when the token
  ids of its first ``n_tokens`` tokens (the encoder's tokenizer, no special tokens) are identical to
  the reference's: what the model sees at the training length is the same input.
- `finetune_splits`: fine-tuning e-mails (the first ``n_train`` of the probe's training split, as
  before), a validation split from the training e-mails the fine-tuning does not use, and the test
  split; validation e-mails that duplicate a fine-tuning e-mail, and test e-mails that duplicate a
  fine-tuning or validation e-mail, are removed (counts returned).
- `choose_regulariser`: the operating point picked on the VALIDATION split (never the test set): the
  regulariser with the most pruning whose validation loss is at most the paper's bound.
- `seeded_loss`: accuracy loss over several fine-tuning seeds with a two-level bootstrap (seeds drawn
  with replacement, then items drawn with replacement; the item draw is shared by the paired baseline
  and pruned runs), so the seed variation is inside the interval.
"""
from __future__ import annotations

import numpy as np

from ..stats import LEVEL, N_RESAMPLES, SEED, Interval, from_draws

__all__ = ["dedup_against", "finetune_splits", "choose_regulariser", "seeded_loss", "DEDUP_RULE"]

DEDUP_RULE = ("an e-mail is a duplicate when the token ids of its first {n} tokens (MiniLM's tokenizer, no special "
              "tokens) equal those of a fine-tuning e-mail (validation and test) or of a validation e-mail (test)")


def _prefixes(tokenizer, texts, n_tokens: int) -> list[tuple]:
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=int(n_tokens),
                    verbose=False)["input_ids"]
    return [tuple(x) for x in ids]


def dedup_against(tokenizer, reference_texts, texts, n_tokens: int) -> np.ndarray:
    """Bool (len(texts),): True where ``texts[i]`` duplicates one of ``reference_texts`` (identical token
    ids over the first ``n_tokens`` tokens; the module's rule)."""
    if int(n_tokens) != n_tokens or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer, got {n_tokens}")
    if isinstance(texts, str) or isinstance(reference_texts, str):
        raise ValueError("texts and reference_texts must be lists of strings")
    ref = set(_prefixes(tokenizer, reference_texts, n_tokens)) if len(reference_texts) else set()
    return np.array([p in ref for p in _prefixes(tokenizer, texts, n_tokens)], dtype=bool)


def finetune_splits(tokenizer, train_texts, train_labels, test_texts, test_labels, *, n_train: int, n_val: int,
                    n_tokens: int) -> dict:
    """Fine-tuning / validation / test splits (module docstring). Returns dict(train=(texts, labels),
    val=(texts, labels), test=(texts, labels), removed=dict(val=k, test=k), rule=str)."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_texts) != len(train_labels) or len(test_texts) != len(test_labels):
        raise ValueError("texts and labels differ in length")
    if n_train < 1 or n_val < 1 or n_train + n_val > len(train_texts):
        raise ValueError(f"{len(train_texts)} training e-mails cannot give {n_train} for fine-tuning and {n_val} for validation")
    ft_x, ft_y = list(train_texts[:n_train]), train_labels[:n_train]
    rest_x, rest_y = list(train_texts[n_train:]), train_labels[n_train:]
    dup_v = dedup_against(tokenizer, ft_x, rest_x, n_tokens)
    keep_v = np.flatnonzero(~dup_v)[:n_val]
    if len(keep_v) < n_val:
        raise ValueError(f"only {len(keep_v)} validation e-mails left after de-duplication, {n_val} requested")
    val_x, val_y = [rest_x[i] for i in keep_v], rest_y[keep_v]
    dup_t = dedup_against(tokenizer, ft_x + val_x, list(test_texts), n_tokens)
    keep_t = np.flatnonzero(~dup_t)
    return dict(train=(ft_x, ft_y), val=(val_x, val_y), test=([test_texts[i] for i in keep_t], test_labels[keep_t]),
                removed=dict(val=int(dup_v[:keep_v[-1] + 1].sum()), test=int(dup_t.sum())),
                rule=DEDUP_RULE.format(n=int(n_tokens)))


def choose_regulariser(val: dict, bound: float) -> tuple[float, bool]:
    """(regulariser, matched) from validation results ``val``: reg -> (loss in points, fraction pruned).
    The regulariser with the most pruning whose validation loss is at most ``bound``; if none is, the
    least lossy one (matched False)."""
    if not val:
        raise ValueError("no validation results")
    ok = [r for r, (loss, _) in val.items() if loss <= bound]
    if ok:
        return max(ok, key=lambda r: (val[r][1], -r)), True
    return min(val, key=lambda r: (val[r][0], r)), False


def seeded_loss(base_correct, pruned_correct, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                seed: int = SEED) -> tuple[float, Interval]:
    """Accuracy loss in points over fine-tuning seeds: lists (one per seed) of per-item correctness (n,)
    of the baseline and the pruned model fine-tuned with that seed, on the same items. Point: the mean
    over seeds of 100 x (acc_base - acc_pruned). Interval: draw seeds with replacement, then items with
    replacement (the same items for every drawn seed, paired within a seed)."""
    B = np.asarray([np.asarray(b, dtype=np.float64) for b in base_correct])
    P = np.asarray([np.asarray(p, dtype=np.float64) for p in pruned_correct])
    if B.ndim != 2 or B.shape != P.shape or B.shape[0] < 1:
        raise ValueError(f"need one per-item correctness array per seed for both runs, got {B.shape} and {P.shape}")
    D = 100.0 * (B - P)                                   # (seeds, items)
    S, n = D.shape
    point = float(D.mean())
    rng = np.random.default_rng(seed)
    draws = np.empty(int(n_resamples))
    for i in range(int(n_resamples)):
        s = rng.integers(0, S, S)
        items = rng.integers(0, n, n)
        draws[i] = D[s][:, items].mean()
    unit = f"two-level bootstrap: {S} fine-tuning seed(s), then {n} test items (paired within a seed)"
    return point, from_draws(point, draws, method=unit, n=n, level=level)
