"""Quality of a real model when its attention is replaced: perplexity (decoder) and probe accuracy (encoder).

Decoder: `text_windows` cuts deterministic, non-overlapping windows of exactly ``window`` tokens out of
running text; `perplexity` scores every token of them after the first (teacher forcing), with the
model's own attention or an `attnlib.models.AttnFn` in some or all layers. It reports perplexity
exp(mean NLL) and bits per UTF-8 byte (NLL in bits divided by the bytes of the scored text), which,
unlike perplexity, compares across tokenizers.

Encoder: there is no masked-LM head for MiniLM here, so quality is a linear probe: `fit_probe` fits a
logistic regression on mean-pooled embeddings computed with EXACT attention (train split), then
`probe_accuracy` re-embeds the held-out test split with a replaced attention and scores the frozen
probe. The drop from the exact accuracy is the quality cost of the approximation.

Exact embeddings are cached under ``paths.cache_dir("embeddings")``, keyed by model, max_length and
the texts themselves.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import paths
from .models import AttnFn, RealModel, logits

__all__ = ["PerplexityResult", "text_windows", "perplexity", "Probe", "fit_probe", "probe_accuracy", "probe_correct",
           "embed"]


# ----------------------------------------------------------------------------- perplexity
@dataclass
class PerplexityResult:
    """perplexity: exp(nll); bits_per_byte: total NLL in bits / n_bytes; n_tokens: scored tokens;
    n_bytes: UTF-8 bytes of the scored tokens' text; nll: mean NLL per scored token (nats);
    window_nll: total NLL (nats) of each window, shape (W,); window_tokens: scored tokens of each window
    (W,) -- the per-window units `attnlib.stats.perplexity_ratio` resamples."""

    perplexity: float
    bits_per_byte: float
    n_tokens: int
    n_bytes: int
    nll: float
    window_nll: np.ndarray = field(default=None, repr=False)
    window_tokens: np.ndarray = field(default=None, repr=False)


def text_windows(rm: RealModel, docs: list[str], window: int, n_windows: int, seed: int = 0) -> list[list[int]]:
    """``n_windows`` token-id windows of exactly ``window`` tokens, cut from ``docs``.

    Each document is tokenised on its own and split into consecutive non-overlapping chunks (a window
    never spans two documents); the chunks are shuffled with ``seed`` and the first ``n_windows`` are
    returned, so the windows for a smaller n are a prefix of those for a larger n. When ``rm.add_bos``
    the window is BOS followed by window-1 text tokens.
    """
    if rm.kind != "decoder":
        raise ValueError("text_windows needs a decoder model")
    if int(window) != window or window < 2 or window > rm.max_positions:
        raise ValueError(f"window must be an integer in [2, {rm.max_positions}], got {window}")
    if int(n_windows) != n_windows or n_windows < 1:
        raise ValueError(f"n_windows must be a positive integer, got {n_windows}")
    if isinstance(docs, str) or not docs:
        raise ValueError("docs must be a non-empty list of strings")
    body = window - 1 if rm.add_bos else window
    chunks = []
    for doc in docs:
        ids = rm.tokenizer(doc, add_special_tokens=False)["input_ids"]
        chunks += [ids[s:s + body] for s in range(0, len(ids) - body + 1, body)]
    if len(chunks) < n_windows:
        raise ValueError(f"the documents hold only {len(chunks)} non-overlapping windows of {window} tokens, "
                         f"{n_windows} requested")
    order = np.random.default_rng(seed).permutation(len(chunks))[:n_windows]
    prefix = [rm.bos_token_id] if rm.add_bos else []
    return [prefix + chunks[i] for i in order]


def perplexity(rm: RealModel, windows: list[list[int]], attn_fn: AttnFn | None = None, layers=None,
               batch_size: int = 2, progress: bool = True) -> PerplexityResult:
    """Teacher-forced perplexity of ``windows`` (from `text_windows`; equal or unequal lengths).

    Token t+1 of each window is scored from tokens 0..t; the first token (BOS or text) is context only.
    ``attn_fn`` / ``layers``: replace the attention (see `attnlib.models.replaced_attention`).
    Memory: batch_size * window * vocab * 8 bytes for logits (SmolLM2, 1024 tokens: ~400 MB per window).
    """
    if rm.kind != "decoder":
        raise ValueError("perplexity needs a decoder model")
    if not windows or any(len(w) < 2 for w in windows):
        raise ValueError("windows must be a non-empty list of token-id lists with >= 2 tokens each")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    total_nll, n_tokens, n_bytes = 0.0, 0, 0
    window_nll, window_tokens = [], []
    starts = range(0, len(windows), batch_size)
    for s in tqdm(starts, desc="perplexity", disable=not progress, leave=False):
        group = windows[s:s + batch_size]
        T = max(len(w) for w in group)
        ids = torch.zeros((len(group), T), dtype=torch.long)
        mask = torch.zeros((len(group), T), dtype=torch.long)
        for i, w in enumerate(group):
            ids[i, :len(w)] = torch.tensor(w, dtype=torch.long)
            mask[i, :len(w)] = 1
        out = logits(rm, {"input_ids": ids, "attention_mask": mask}, attn_fn=attn_fn, layers=layers)
        logp = torch.log_softmax(out[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, ids[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1).cpu()
        valid = mask[:, 1:].bool()
        if not torch.isfinite(nll[valid]).all():
            raise FloatingPointError("non-finite NLL: the attention function produced NaN/inf somewhere")
        total_nll += float(nll[valid].double().sum())
        window_nll += (nll.double() * valid).sum(1).tolist()
        window_tokens += valid.sum(1).tolist()
        n_tokens += int(valid.sum())
        for w in group:
            n_bytes += len(rm.tokenizer.decode(w[1:], skip_special_tokens=False).encode("utf-8"))
    mean = total_nll / n_tokens
    return PerplexityResult(perplexity=math.exp(mean), bits_per_byte=total_nll / math.log(2) / n_bytes,
                            n_tokens=n_tokens, n_bytes=n_bytes, nll=mean, window_nll=np.asarray(window_nll),
                            window_tokens=np.asarray(window_tokens))


# ----------------------------------------------------------------------------- embeddings
def _cache_key(rm: RealModel, texts: list[str], max_length: int) -> str:
    h = hashlib.sha256(json.dumps([rm.name, int(max_length), texts], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()[:32]


def embed(rm: RealModel, texts: list[str], max_length: int, attn_fn: AttnFn | None = None, layers=None,
          batch_size: int = 32, progress: bool = True, use_cache: bool = True) -> np.ndarray:
    """Mean-pooled last hidden states over the real (non-padding) tokens, including [CLS] and [SEP].

    Returns float32 (N, d_model), row i for texts[i]. Texts are truncated to ``max_length`` tokens and
    batched by length (padding does not change the result: padded keys are masked). Exact embeddings
    (``attn_fn=None``) are cached on disk unless ``use_cache=False``.
    """
    if rm.kind != "encoder":
        raise ValueError("embed needs an encoder model (mean-pooled sentence embeddings)")
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    texts = list(texts)
    cache = None
    if attn_fn is None and use_cache:
        cache = paths.cache_dir("embeddings") / f"{_cache_key(rm, texts, max_length)}.npy"
        if cache.exists():
            return np.load(cache)
    from tqdm.auto import tqdm

    from .models import encode

    lengths = [len(x) for x in rm.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), rm.d_model), dtype=np.float32)
    for s in tqdm(range(0, len(texts), batch_size), desc="embed", disable=not progress, leave=False):
        idx = order[s:s + batch_size]
        batch = encode(rm, [texts[i] for i in idx], max_length)
        hidden = logits(rm, batch, attn_fn=attn_fn, layers=layers)
        m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out[idx] = ((hidden * m).sum(1) / m.sum(1)).float().cpu().numpy()
    if not np.all(np.isfinite(out)):
        raise FloatingPointError("non-finite embeddings: the attention function produced NaN/inf somewhere")
    if cache is not None:
        paths.atomic_write_bytes(cache, _npy_bytes(out))
    return out


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# ----------------------------------------------------------------------------- probes
@dataclass
class Probe:
    """A logistic-regression probe on frozen, exactly computed, mean-pooled encoder embeddings.

    clf: the fitted sklearn LogisticRegression; train/test split: stratified, fixed by ``seed``;
    exact_accuracy: test accuracy with exact attention; majority_rate: test accuracy of always
    answering the training set's most common class (the floor a probe must beat).
    """

    clf: object
    max_length: int
    seed: int
    train_texts: list[str] = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_texts: list[str] = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    label_names: list[str] | None = None
    train_accuracy: float = float("nan")
    exact_accuracy: float = float("nan")
    majority_rate: float = float("nan")

    @property
    def n_train(self) -> int:
        return len(self.train_texts)

    @property
    def n_test(self) -> int:
        return len(self.test_texts)


def fit_probe(rm: RealModel, texts: list[str], labels, max_length: int = 128, seed: int = 0,
              test_fraction: float = 0.3, label_names: list[str] | None = None, C: float = 1.0,
              progress: bool = True) -> Probe:
    """Fit a `Probe` on a stratified train split (1 - test_fraction) of (texts, labels)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if len(np.unique(labels)) < 2:
        raise ValueError("a probe needs at least two classes")
    idx_train, idx_test = train_test_split(np.arange(len(texts)), test_size=test_fraction, random_state=seed,
                                           stratify=labels)
    X = embed(rm, list(texts), max_length, progress=progress)
    clf = LogisticRegression(C=C, max_iter=5000)
    clf.fit(X[idx_train], labels[idx_train])
    values, counts = np.unique(labels[idx_train], return_counts=True)
    majority = values[np.argmax(counts)]
    return Probe(clf=clf, max_length=max_length, seed=seed,
                 train_texts=[texts[i] for i in idx_train], train_labels=labels[idx_train],
                 test_texts=[texts[i] for i in idx_test], test_labels=labels[idx_test], label_names=label_names,
                 train_accuracy=float(clf.score(X[idx_train], labels[idx_train])),
                 exact_accuracy=float(clf.score(X[idx_test], labels[idx_test])),
                 majority_rate=float(np.mean(labels[idx_test] == majority)))


def probe_correct(rm: RealModel, probe: Probe, attn_fn: AttnFn | None = None, layers=None,
                  progress: bool = True) -> np.ndarray:
    """Per-item correctness (bool, shape (n_test,)) of the frozen probe on its test texts re-embedded
    with ``attn_fn`` in ``layers``; with ``attn_fn=None`` the exact-attention reference. Keep these
    arrays: `attnlib.stats.accuracy_loss` turns a (reference, approximate) pair into a paired interval."""
    X = embed(rm, probe.test_texts, probe.max_length, attn_fn=attn_fn, layers=layers, progress=progress)
    return probe.clf.predict(X) == probe.test_labels


def probe_accuracy(rm: RealModel, probe: Probe, attn_fn: AttnFn | None = None, layers=None,
                   progress: bool = True) -> float:
    """Accuracy in [0, 1] of the frozen probe on its test texts re-embedded with ``attn_fn`` in ``layers``."""
    return float(probe_correct(rm, probe, attn_fn, layers, progress).mean())
