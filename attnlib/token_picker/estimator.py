"""Token-Picker estimators: prune cached tokens whose attention probability is provably below a
threshold BEFORE their remaining key bits and their value are fetched.

Common ground (both estimators)
-------------------------------
* Keys are stored quantised: symmetric integers of ``k_bits`` bits with one scale per cached token
  (per KV head), values likewise with ``v_bits`` bits. The "exact probability" every guarantee refers to
  is ``softmax(scale * q . k_deq + mask)`` over ALL allowed tokens with the dequantised ``k_bits`` keys
  (`quantised_probs`). Queries stay in floating point (they live on chip).
* A key integer is split MSB-first into ``chunk_bits``-wide chunks (two's complement: the high part is
  floor(k / 2^r), the unfetched low part lies in [0, 2^r - 1] with r bits missing). After m chunks the
  score s_i = scale * step_i * q . k_i is bracketed (Eq. 4 of the paper as the card reads it):

      l_i(m) = scale * step_i * ( q . hi_i(m) * 2^r + (2^r - 1) * sum_d min(q_d, 0) )  <=  s_i
      u_i(m) = scale * step_i * ( q . hi_i(m) * 2^r + (2^r - 1) * sum_d max(q_d, 0) )  >=  s_i

  More chunks never loosen either bound; all chunks give the exact quantised score.
* Decision rule, conservative by a relative ``margin`` (1e-9) so that rounding cannot turn a bound equal
  to the threshold into a prune: prune iff bound < threshold * (1 - margin).

The paper's estimator (``estimator="paper"``, the headline; Eq. 4-5 and Fig. 5 as the card reads them)
--------------------------------------------------------------------------------------------------------
Per decode step, out of order: read the FIRST chunk of every cached token; the denominator is built
from the LOWER-bound exponentials of every token read so far (Eq. 5),

      p_i = exp(s_i) / Z  <=  exp(u_i) / sum_j exp(l_j)        (Z >= sum_j exp(l_j) since l_j <= s_j),

prune every token whose bound is below the threshold (none of its other chunks, nor its value, is
fetched); read the next chunk of the survivors only, tighten their bounds (pruned tokens keep their
last lower bound in the denominator: still a valid lower bound of their term of Z), recompute the
denominator and prune again; after the last chunk the bound uses the exact score. Kept tokens' values
are fetched and the output is the softmax over the kept tokens. If the threshold exceeds 1/n every
token of a row may be pruned (all probabilities can be below it); then the token with the largest
lower bound is kept (its remaining chunks and value fetched) so the output is defined. Vectorised over
tokens: each stage is a handful of tensor operations over (rows x tokens). Keys repeated over the query
heads of a GQA group are quantised and bounded once per KV head (one matmul per bound for all the
group's rows); every bound, denominator and decision is the same floating-point computation as per
head (tests pin kept tokens and counts against a per-head implementation, bit for bit).

The sequential estimator (``estimator="sequential"``, the alternative row)
--------------------------------------------------------------------------
Tokens are processed one after the other in a stated order (default: the first ``n_sink`` "sink"
tokens, then from the most recent backwards) while a partial denominator D = sum of exp(s_j) over the
tokens KEPT so far is accumulated; since Z >= exp(s_i) + D,

      p_i <= exp(u_i) / (exp(u_i) + D) = sigmoid(u_i - log D),

and token i is pruned at the first chunk stage where this is below the threshold. A kept token adds
exp(s_i) to D. The denominator early in the scan is far smaller than the paper's (only the tokens
kept so far), so it prunes less at the same threshold with the same guarantee. Vectorised over rows;
the scan over tokens is a Python loop (``tile`` tokens at a time).

So, for both (property tested in tests/test_token_picker.py on real captured tensors and adversarial
inputs): every pruned token's exact probability is below the threshold, and the probability mass
dropped per row is below (number pruned) * threshold.

Implementations: `pick_reference` (sequential) and `pick_reference_paper` (one head, one step, plain
loops, readable, never overflow) and `token_pick` (vectorised with torch over batch x heads x query
rows, dispatching on ``cfg.estimator``; a teacher-forced forward with a causal mask is a batch of
decode steps: row i is decode step i; float64, one torch thread: on 2 shared cores a second intra-op
thread made the many short operations slower under load, issue 25). Reference and vectorised versions
agree exactly (tested).
`token_pick` also counts the ORACLE: tokens whose exact probability is at or above the threshold (what
a perfect estimator would keep).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..threads import torch_threads

__all__ = [
    "ESTIMATORS", "ORDERS", "PickerConfig", "quantize", "dequantize", "processing_order", "chunk_upper_scores",
    "chunk_score_bounds", "quantised_scores", "quantised_probs", "RefResult", "pick_reference",
    "pick_reference_paper", "pick_reference_sequential", "check_scale", "check_kv_groups", "PickResult", "token_pick", "dense_quantised_attention",
]

ESTIMATORS = ("paper", "sequential")
ORDERS = ("sink-recent", "recent", "chronological")


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class PickerConfig:
    """Parameters of the estimator (all stated, all swept in the notebook).

    threshold: prune a token when its upper-bound probability is below this (0 = never prune);
    k_bits / v_bits: key / value integer precision (symmetric, one scale per cached token);
    chunk_bits: width of a key chunk fetched MSB-first (the last chunk may be narrower);
    n_sink: how many leading tokens are processed first in order "sink-recent";
    order: "sink-recent" (sinks, then newest to oldest), "recent" (newest to oldest),
        "chronological" (oldest to newest: the naive order, for comparison);
    margin: relative safety margin of the prune decision against floating-point rounding;
    estimator: "paper" (out of order, lower-bound denominator over all tokens, Eq. 4-5) or "sequential"
        (running sum over the kept tokens); ``order`` and ``n_sink`` apply to "sequential" only.
    """

    threshold: float = 1e-3
    k_bits: int = 12
    chunk_bits: int = 4
    v_bits: int = 12
    n_sink: int = 4
    order: str = "sink-recent"
    margin: float = 1e-9
    estimator: str = "paper"

    def __post_init__(self):
        if not (0.0 <= self.threshold < 1.0) or not math.isfinite(self.threshold):
            raise ValueError(f"threshold must lie in [0, 1), got {self.threshold}")
        for name in ("k_bits", "v_bits"):
            bits = getattr(self, name)
            if int(bits) != bits or not 2 <= bits <= 24:
                raise ValueError(f"{name} must be an integer in [2, 24], got {bits}")
        if int(self.chunk_bits) != self.chunk_bits or not 1 <= self.chunk_bits <= self.k_bits:
            raise ValueError(f"chunk_bits must be an integer in [1, k_bits={self.k_bits}], got {self.chunk_bits}")
        if int(self.n_sink) != self.n_sink or self.n_sink < 0:
            raise ValueError(f"n_sink must be a non-negative integer, got {self.n_sink}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}; known: {', '.join(ORDERS)}")
        if not 0 <= self.margin < 1e-3:
            raise ValueError(f"margin must lie in [0, 1e-3), got {self.margin}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; known: {', '.join(ESTIMATORS)}")

    @property
    def n_chunks(self) -> int:
        return -(-self.k_bits // self.chunk_bits)

    @property
    def missing_bits(self) -> tuple[int, ...]:
        """Bits still unfetched after chunk m = 1..n_chunks (the last entry is 0)."""
        return tuple(max(self.k_bits - m * self.chunk_bits, 0) for m in range(1, self.n_chunks + 1))

    @property
    def chunk_widths(self) -> tuple[int, ...]:
        prev = (self.k_bits,) + self.missing_bits[:-1]
        return tuple(p - r for p, r in zip(prev, self.missing_bits))

    @property
    def prune_below(self) -> float:
        """The effective threshold of the decision (threshold shrunk by the safety margin)."""
        return self.threshold * (1.0 - self.margin)


# ----------------------------------------------------------------------------- quantisation
def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or inf in ``x``: one reduction (a NaN or inf makes the sum non-finite); only a sum that
    overflows on huge finite values falls back to the elementwise test, so the answer is always exact."""
    if not x.is_floating_point() or x.numel() == 0:
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _quantize_torch(x: torch.Tensor, bits: int, error: str):
    """`quantize` of a torch tensor; raises ValueError(error) when x holds NaN or inf, seen in the
    per-row max |x| (a NaN propagates through aminmax and maximum, an inf is the max): no extra pass."""
    qmax = 2 ** (bits - 1) - 1
    x = x.to(torch.float64)
    if x.shape[-1]:  # max |x| as max(-min, max): one pass, no |x| copy (negation is exact)
        lo, hi = torch.aminmax(x, dim=-1, keepdim=True)
        amax = torch.maximum(lo.neg_(), hi)
        if not bool(torch.isfinite(amax).all()):
            raise ValueError(error)
    else:
        amax = x.abs().amax(dim=-1, keepdim=True)
    step = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.div(x, step).round_().clamp_(-qmax, qmax), step  # in place: the same values, fewer passes


def quantize(x, bits: int):
    """Symmetric per-row (last axis) quantisation: returns (integers as float64, step (..., 1)).

    x = ints * step with ints in [-(2^(bits-1) - 1), 2^(bits-1) - 1]; an all-zero row gets step 1.
    Works on numpy arrays and torch tensors (float64 result of the same kind).
    """
    qmax = 2 ** (bits - 1) - 1
    if isinstance(x, torch.Tensor):
        return _quantize_torch(x, bits, "cannot quantise NaN or inf")
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot quantise NaN or inf")
    amax = np.max(np.abs(x), axis=-1, keepdims=True) if x.shape[-1] else np.zeros(x.shape[:-1] + (1,))
    step = np.where(amax > 0, amax / qmax, 1.0)
    return np.clip(np.round(x / step), -qmax, qmax), step


def dequantize(ints, step):
    return ints * step


def processing_order(n: int, cfg: PickerConfig) -> np.ndarray:
    """Order in which the ``n`` cached tokens of one decode step are processed (indices 0..n-1)."""
    if cfg.order == "chronological":
        return np.arange(n)
    sinks = min(cfg.n_sink, n) if cfg.order == "sink-recent" else 0
    return np.concatenate([np.arange(sinks), np.arange(n - 1, sinks - 1, -1)]).astype(np.int64)


def chunk_upper_scores(q, k_int, k_step, scale: float, cfg: PickerConfig):
    """Upper bounds u(m) of the scores after m = 1..n_chunks-1 chunks, and the exact quantised scores.

    q (..., Tq, d) float, k_int (..., Tk, d) integers, k_step (..., Tk, 1). Returns a list of
    n_chunks-1 tensors (..., Tq, Tk) and the exact scores (..., Tq, Tk), float64 torch.
    """
    q = torch.as_tensor(q, dtype=torch.float64)
    k_int = torch.as_tensor(k_int, dtype=torch.float64)
    col = scale * torch.as_tensor(k_step, dtype=torch.float64).squeeze(-1).unsqueeze(-2)  # (..., 1, Tk)
    qpos = q.clamp_min(0).sum(-1, keepdim=True)  # (..., Tq, 1)
    uppers = []
    for r in cfg.missing_bits[:-1]:
        hi = torch.floor(k_int / 2 ** r)
        uppers.append(col * (torch.matmul(q, hi.transpose(-1, -2)) * 2 ** r + (2 ** r - 1) * qpos))
    exact = col * torch.matmul(q, k_int.transpose(-1, -2))
    return uppers, exact


def chunk_score_bounds(q, k_int, k_step, scale: float, cfg: PickerConfig):
    """Lower and upper bounds (l(m), u(m)) of the scores after m = 1..n_chunks chunks (Eq. 4).

    q (..., Tq, d), k_int (..., Tk, d) integers, k_step (..., Tk, 1). Returns two lists of n_chunks
    tensors (..., Tq, Tk), float64 torch; the last entry of both is the exact quantised score.
    """
    q = torch.as_tensor(q, dtype=torch.float64)
    k_int = torch.as_tensor(k_int, dtype=torch.float64)
    col = scale * torch.as_tensor(k_step, dtype=torch.float64)  # (..., Tk, 1)
    qpos = q.clamp_min(0).sum(-1, keepdim=True)
    qneg = q.clamp_max(0).sum(-1, keepdim=True)
    q_lo, q_up = torch.cat([q, qneg], -1), torch.cat([q, qpos], -1)  # (..., Tq, d + 1)
    lowers, uppers = [], []
    for r in cfg.missing_bits:
        # bound = q . (hi * 2^r * col) + q_sign_sum * (2^r - 1) * col, as ONE augmented matmul each
        key_aug = torch.cat([torch.floor(k_int / 2 ** r) * (2 ** r) * col, (2 ** r - 1) * col], -1)
        lowers.append(torch.matmul(q_lo, key_aug.transpose(-1, -2)))
        uppers.append(lowers[-1] if r == 0 else torch.matmul(q_up, key_aug.transpose(-1, -2)))
    return lowers, uppers


def quantised_scores(q, k, scale: float | None, cfg: PickerConfig):
    """scale * q . k_deq with k quantised to cfg.k_bits (the scores the softmax really uses)."""
    k_int, k_step = quantize(torch.as_tensor(k), cfg.k_bits)
    q = torch.as_tensor(q, dtype=torch.float64)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return scale * torch.matmul(q, (k_int * k_step).transpose(-1, -2))


def quantised_probs(q, k, cfg: PickerConfig, *, scale: float | None = None, mask=None, causal: bool = False):
    """EXACT dense probabilities with the quantised keys, through the reference attnlib.attention
    (float64 numpy): the quantity every pruning guarantee is stated against."""
    from ..attention import attention

    q = np.asarray(torch.as_tensor(q, dtype=torch.float64))
    k_int, k_step = quantize(np.asarray(torch.as_tensor(k, dtype=torch.float64)), cfg.k_bits)
    kd = k_int * k_step
    _, p = attention(q, kd, kd, mask=mask, causal=causal, scale=scale, return_probs=True)
    return p


# ----------------------------------------------------------------------------- input checks
def check_scale(scale, d: int) -> float:
    """The softmax scale: 1/sqrt(d) when None, else a finite positive number (ValueError otherwise)."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    return value


def check_kv_groups(kv_groups, n_heads: int) -> int:
    """Query heads per KV head: an integer >= 1 dividing the number of heads (ValueError otherwise)."""
    if isinstance(kv_groups, bool) or int(kv_groups) != kv_groups or kv_groups < 1:
        raise ValueError(f"kv_groups must be an integer >= 1, got {kv_groups!r}")
    if n_heads % int(kv_groups):
        raise ValueError(f"kv_groups ({kv_groups}) must divide the number of heads ({n_heads})")
    return int(kv_groups)


def _log_sigmoid(x: float) -> float:
    """log(1 / (1 + exp(-x))) without overflow for any finite or infinite x."""
    if x == math.inf:
        return 0.0
    if x == -math.inf:
        return -math.inf
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _lse(values) -> float:
    """log(sum(exp(values))) of a sequence of floats (-inf for an empty one), overflow-free."""
    vals = [float(v) for v in values if v > -math.inf]
    if not vals:
        return -math.inf
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


# ----------------------------------------------------------------------------- readable reference
@dataclass
class RefResult:
    """One decode step of one head. ``kept``/``chunks`` per cached token (chunks = key chunks fetched)."""

    out: np.ndarray
    kept: np.ndarray
    chunks: np.ndarray
    order: np.ndarray
    bounds: np.ndarray  # the last upper-bound probability evaluated for each token


def _ref_inputs(q, k, v, name):
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if q.ndim != 1 or k.ndim != 2 or v.ndim != 2 or k.shape[1] != q.shape[0] or v.shape[0] != k.shape[0]:
        raise ValueError(f"{name} wants q (d,), k (T, d), v (T, dv); got {q.shape}, {k.shape}, {v.shape}")
    if k.shape[0] == 0:
        raise ValueError("Token-Picker needs at least one cached token (empty KV cache)")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(k)) and np.all(np.isfinite(v))):
        raise ValueError("q, k or v contains NaN or inf")
    return q, k, v


def pick_reference(q, k, v, cfg: PickerConfig, *, scale: float | None = None) -> RefResult:
    """Readable Token-Picker for ONE query (d,) against ONE head's cache k (T, d), v (T, dv), with the
    estimator ``cfg.estimator`` (`pick_reference_paper` or `pick_reference_sequential`)."""
    if cfg.estimator == "paper":
        return pick_reference_paper(q, k, v, cfg, scale=scale)
    return pick_reference_sequential(q, k, v, cfg, scale=scale)


def pick_reference_paper(q, k, v, cfg: PickerConfig, *, scale: float | None = None) -> RefResult:
    """The paper's estimator (Eq. 4-5, out of order) for ONE query against ONE head: plain loops.

    Stage m: read chunk m of every surviving token (all of them, before any decision of the stage),
    bound each score from below and above, build the denominator from the lower bounds of every token
    read so far, prune survivors whose bound exp(u) / D is below the threshold. ``bounds`` holds the
    last bound evaluated per token (capped at 1). Written to be read next to the paper; `token_pick`
    is the fast version (they agree, tested). Everything in the log domain: nothing overflows.
    """
    q, k, v = _ref_inputs(q, k, v, "pick_reference_paper")
    T = k.shape[0]
    scale = check_scale(scale, q.shape[0])
    k_int, k_step = quantize(k, cfg.k_bits)           # what is stored in DRAM
    v_int, v_step = quantize(v, cfg.v_bits)
    q_pos = float(np.sum(np.maximum(q, 0.0)))         # sum of positive query channels
    q_neg = float(np.sum(np.minimum(q, 0.0)))         # sum of negative query channels
    log_thr = math.log(cfg.prune_below) if cfg.prune_below > 0 else -math.inf
    lower = np.full(T, -math.inf)
    upper = np.full(T, math.inf)
    alive = np.ones(T, dtype=bool)
    chunks = np.zeros(T, dtype=np.int64)
    bounds = np.ones(T)
    for m in range(1, cfg.n_chunks + 1):
        r = cfg.missing_bits[m - 1]
        for i in range(T):                            # fetch chunk m of every surviving key
            if not alive[i]:
                continue
            chunks[i] = m
            hi = np.floor(k_int[i] / 2 ** r)          # the bits fetched so far
            base = scale * k_step[i, 0] * float(q @ hi) * 2 ** r
            lower[i] = base + scale * k_step[i, 0] * (2 ** r - 1) * q_neg
            upper[i] = base + scale * k_step[i, 0] * (2 ** r - 1) * q_pos
        log_d = _lse(lower)                           # pruned tokens keep their last lower bound
        for i in range(T):
            if alive[i]:
                bounds[i] = math.exp(min(upper[i] - log_d, 0.0))
                if upper[i] - log_d < log_thr:        # exp(u_i) / D below the threshold: prune
                    alive[i] = False
    if not alive.any():                               # threshold > 1/T: keep the best lower bound
        i = int(np.argmax(lower))
        alive[i] = True
        chunks[i] = cfg.n_chunks
        lower[i] = scale * k_step[i, 0] * float(q @ k_int[i])
    kept = alive
    s = lower[kept]                                   # kept tokens: all chunks read, lower = exact score
    w = np.exp(s - s.max())
    out = (w / w.sum()) @ (v_int[kept] * v_step[kept])
    return RefResult(out=out, kept=kept, chunks=chunks, order=np.arange(T), bounds=bounds)


def pick_reference_sequential(q, k, v, cfg: PickerConfig, *, scale: float | None = None) -> RefResult:
    """The sequential estimator for ONE query (d,) against ONE head's cache k (T, d), v (T, dv): a plain
    loop over tokens in processing order (``cfg.estimator`` is not consulted).

    Written to be read next to the paper; `token_pick` is the fast version (they agree, tested).
    """
    q, k, v = _ref_inputs(q, k, v, "pick_reference_sequential")
    T = k.shape[0]
    scale = check_scale(scale, q.shape[0])
    k_int, k_step = quantize(k, cfg.k_bits)           # what is stored in DRAM
    v_int, v_step = quantize(v, cfg.v_bits)
    q_pos = np.sum(np.maximum(q, 0.0))                # sum of positive query channels
    order = processing_order(T, cfg)

    run_max, denom = -math.inf, 0.0                   # running max and partial denominator sum exp(s - max)
    acc = np.zeros(v.shape[1])                        # running sum exp(s - max) * v
    kept = np.zeros(T, dtype=bool)
    chunks = np.zeros(T, dtype=np.int64)
    bounds = np.ones(T)

    def bound_prob(upper_score):
        # exp(u) / (exp(u) + D) = sigmoid(u - log D), log D = run_max + log(denom): nothing overflows
        if run_max == -math.inf:
            return 1.0
        return math.exp(_log_sigmoid(upper_score - (run_max + math.log(denom))))

    for i in order:
        alive = True
        for m in range(1, cfg.n_chunks + 1):          # fetch chunk m of key i (MSB first)
            chunks[i] = m
            r = cfg.missing_bits[m - 1]
            hi = np.floor(k_int[i] / 2 ** r)          # the bits fetched so far
            upper = scale * k_step[i, 0] * (float(q @ hi) * 2 ** r + (2 ** r - 1) * q_pos)
            bounds[i] = bound_prob(upper)
            if bounds[i] < cfg.prune_below:           # cannot reach the threshold: stop fetching
                alive = False
                break
        if not alive:
            continue
        s = upper                                     # all chunks fetched: exact quantised score
        kept[i] = True                                # fetch the value, update max / denominator
        if s > run_max:
            factor = math.exp(run_max - s) if run_max > -math.inf else 0.0
            denom, acc, run_max = denom * factor, acc * factor, s
        w = math.exp(s - run_max)
        denom += w
        acc += w * (v_int[i] * v_step[i, 0])
    return RefResult(out=acc / denom, kept=kept, chunks=chunks, order=order, bounds=bounds)


# ----------------------------------------------------------------------------- vectorised
@dataclass
class PickResult:
    """Result of `token_pick` for q (B, H, Tq, d): output and per-row (decode step) counts.

    n_context (B, H, Tq): allowed cached tokens; n_kept: tokens kept (values used);
    key_chunks: key chunks fetched, summed over tokens; n_full: tokens whose whole key was fetched;
    pruned_mass: exact (quantised-key, full softmax) probability mass of the pruned tokens;
    n_oracle: tokens whose exact probability is at or above the threshold (a perfect estimator's count);
    kv_*: the same fetch counts per KV head after the union over the ``kv_groups`` query heads that
    share it (GQA: a chunk / value is fetched once if any head of the group needs it), (B, H/G, Tq).
    kept / chunks (B, H, Tq, Tk): per-token masks, only with ``return_masks=True``.
    """

    out: torch.Tensor
    n_context: torch.Tensor
    n_kept: torch.Tensor
    key_chunks: torch.Tensor
    n_full: torch.Tensor
    pruned_mass: torch.Tensor
    n_oracle: torch.Tensor
    kv_key_chunks: torch.Tensor
    kv_n_full: torch.Tensor
    kv_n_values: torch.Tensor
    kept: torch.Tensor | None = None
    chunks: torch.Tensor | None = None

    @property
    def pruning_ratio(self) -> float:
        """Tokens in context / tokens kept, summed over every row (ratio of sums)."""
        return float(self.n_context.sum() / self.n_kept.sum().clamp_min(1))


def _allowed_and_bias(mask, causal, Tq, Tk, B=None, H=None):
    """Boolean allowed (Bm, Hm, Tq, Tk) and an additive bias (or None) from a mask and/or causality.
    The mask must broadcast to (B, H, Tq, Tk) (each axis 1 or the full size) and hold no NaN."""
    allowed = torch.ones((1, 1, Tq, Tk), dtype=torch.bool)
    bias = None
    if causal:
        if Tq > Tk:
            raise ValueError("causal attention needs Tq <= Tk")
        allowed = allowed & torch.as_tensor(np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq))
    if mask is not None:
        mask = torch.as_tensor(mask)
        if mask.ndim > 4:
            raise ValueError(f"mask must have at most 4 axes (B, H, Tq, Tk), got shape {tuple(mask.shape)}")
        while mask.ndim < 4:
            mask = mask.unsqueeze(0)
        want = (B, H, Tq, Tk)
        if any(m != 1 and w is not None and m != w for m, w in zip(mask.shape, want)):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (B, H, Tq, Tk) = "
                             f"{tuple(w if w is not None else '?' for w in want)}")
        if mask.dtype != torch.bool and bool(torch.isnan(mask).any()):
            raise ValueError("the float mask contains NaN")
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            mask = mask.to(torch.float64)
            forbid = mask <= -1e4  # additive mask: very negative (finfo.min, -inf, -1e4) forbids
            allowed = allowed & ~forbid
            bias = torch.where(forbid, torch.zeros_like(mask), mask)
            if not bool((bias != 0).any()):
                bias = None
    return allowed, bias


def _order_plan(allowed: torch.Tensor, cfg: PickerConfig):
    """How to find, at processing step j, which token each row handles.

    Returns (n_allowed, n_sink_rows, order) where order is None when every row's allowed set is a
    prefix [0, n) (the decoder case: positions are then computed arithmetically), else the
    (…, Tq, Tk) matrix of token indices in processing order (allowed ones first).
    """
    Tk = allowed.shape[-1]
    n_allowed = allowed.sum(-1)
    sinks = min(cfg.n_sink, Tk) if cfg.order == "sink-recent" else 0
    n_s = n_allowed.clamp(max=sinks)
    prefix = bool((allowed == (torch.arange(Tk) < n_allowed[..., None])).all())
    if prefix:
        return n_allowed, n_s, None
    rank = torch.cumsum(allowed, dim=-1) - 1
    if cfg.order == "chronological":
        prio = rank
    else:
        prio = torch.where(rank < n_s[..., None], rank, n_s[..., None] + (n_allowed[..., None] - 1 - rank))
    prio = torch.where(allowed, prio, Tk + torch.arange(Tk))
    return n_allowed, n_s, torch.argsort(prio, dim=-1, stable=True)


def _positions(js: torch.Tensor, n_allowed, n_s, order, cfg: PickerConfig):
    """Token index handled by every row at steps ``js`` (t,), and whether the row has such a step."""
    valid = js < n_allowed[..., None]
    if order is not None:
        pos = order[..., js.clamp(max=order.shape[-1] - 1)]
    elif cfg.order == "chronological":
        pos = js.expand(valid.shape)
    else:
        ns = n_s[..., None]
        pos = torch.where(js < ns, js, n_allowed[..., None] - 1 - (js - ns))
    return pos.clamp(0, None), valid


def _take(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """flat[idx] (torch.take and advanced indexing copy the whole source here; index_select does not)."""
    return flat.index_select(0, idx.reshape(-1)).view(idx.shape)


def _lse_last(x: torch.Tensor) -> torch.Tensor:
    """log-sum-exp along the last axis (torch.logsumexp is very slow on all -inf rows here)."""
    if x.shape[-1] == 1:
        return x[..., 0]
    m = x.amax(-1)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m_safe + torch.log(torch.exp(x - m_safe[..., None]).sum(-1))


def _validate(q, k, v, cfg, mask, causal, scale, kv_groups, tile, compute_output=True):
    """Shared input checks of both estimators; returns (q, k, v, scale, kv_groups, allowed, bias).

    NaN / inf: q is checked here; k by its quantisation (every estimator quantises it, see
    `_quantize_torch`: the same error, no extra pass over the largest input), v likewise when the
    output is computed, else here."""
    if not isinstance(cfg, PickerConfig):
        raise ValueError(f"cfg must be a PickerConfig, got {type(cfg).__name__}")
    q, k, v = (torch.as_tensor(t) for t in (q, k, v))
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"token_pick wants 4-d (B, H, T, d) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Tq, d = q.shape
    Tk = k.shape[-2]
    if Tk == 0:
        raise ValueError("Token-Picker needs at least one cached token (empty KV cache)")
    if k.shape[:2] != (B, H) or v.shape[:3] != (B, H, Tk) or k.shape[-1] != d:
        raise ValueError(f"shape mismatch: q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    kv_groups = check_kv_groups(kv_groups, H)
    if isinstance(tile, bool) or int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile}")
    scale = check_scale(scale, d)
    for name, t in (("q", q),) + (() if compute_output else (("v", v),)):
        if not _all_finite(t):
            raise ValueError(f"{name} contains NaN or inf")
    allowed, bias = _allowed_and_bias(mask, causal, Tq, Tk, B, H)
    if kv_groups > 1 and allowed.shape[1] > 1:
        a = allowed.reshape(allowed.shape[0], -1, kv_groups, Tq, Tk)
        if not bool((a == a[:, :, :1]).all()):
            raise ValueError("the heads of a KV group must share one mask for the shared-fetch accounting")
    return q, k, v, scale, kv_groups, allowed, bias


def token_pick(q, k, v, cfg: PickerConfig, *, mask=None, causal: bool = False, scale: float | None = None,
               kv_groups: int = 1, tile: int = 1, return_masks: bool = False, thresholds=None,
               compute_output: bool = True, max_elements: int = 8_000_000):
    """Vectorised Token-Picker: every query row of q (B, H, Tq, d) prunes against its allowed keys,
    with the estimator ``cfg.estimator`` ("paper" or "sequential", see the module docstring).

    k, v (B, H, Tk, d) (GQA keys already repeated to H heads; ``kv_groups`` = H / KV heads, used for
    the shared-fetch accounting). ``mask`` (bool, True = allowed, or additive float) broadcasts to
    (B, H, Tq, Tk); ``causal`` adds the causal mask (the last Tq of Tk positions). ``scale``: softmax
    scale (default 1/sqrt(d); finite and positive). ``tile`` (sequential only): tokens whose bounds
    are evaluated against the same partial denominator (1 = strictly sequential, the algorithm of
    `pick_reference_sequential`; t > 1 models t tokens in flight: still a valid bound, fewer prunes).
    ``thresholds``: a list of thresholds evaluated in one pass (returns a list of PickResult;
    ``cfg.threshold`` is then ignored). ``max_elements`` bounds the working set (tokens x rows x
    chunks per block of KV heads; the paper estimator uses blocks of at most 1e6). Computation in
    float64 on the CPU, torch single-threaded for both estimators whatever the caller's thread count
    (restored afterwards): many short memory-bound operations gain little from a second thread and
    lose badly when other jobs hold the cores (issue 25: 831 ms on two threads under load, 120 ms on
    one). NaN / inf in q, k or v raise ValueError.
    """
    with torch_threads(1):
        q, k, v, scale, kv_groups, allowed, bias = _validate(q, k, v, cfg, mask, causal, scale, kv_groups, tile,
                                                             compute_output)
        if thresholds is not None:
            thresholds = [float(t) for t in thresholds]
            if not thresholds:
                raise ValueError("thresholds must be a non-empty list")
            for t in thresholds:  # PickerConfig checks each value
                replace(cfg, threshold=t)
        kw = dict(scale=scale, kv_groups=kv_groups, return_masks=return_masks, thresholds=thresholds,
                  compute_output=compute_output, max_elements=max_elements, allowed=allowed, bias=bias)
        if cfg.estimator == "paper":
            return _token_pick_paper(q, k, v, cfg, **kw)
        return _token_pick_sequential(q, k, v, cfg, tile=int(tile), **kw)


def _token_pick_sequential(q, k, v, cfg: PickerConfig, *, scale, kv_groups, tile, return_masks, thresholds,
                           compute_output, max_elements, allowed, bias):
    """The sequential estimator (see `token_pick`); inputs already validated."""
    B, H, Tq, d = q.shape
    Tk = k.shape[-2]
    single = thresholds is None
    cfgs = [cfg] if single else [replace(cfg, threshold=float(t)) for t in thresholds]
    L = len(cfgs)
    lam = torch.tensor([math.log(c.prune_below / (1 - c.prune_below)) if c.prune_below > 0 else -math.inf
                        for c in cfgs], dtype=torch.float64).view(L, 1, 1)
    n_allowed, n_s, order = _order_plan(allowed, cfg)

    q64, k_int, k_step, v_deq, out, stat, kvs, kept_all, chunks_all = _prepare(
        q, k, v, cfg, compute_output, kv_groups, L, return_masks)
    qpos = q64.clamp_min(0).sum(-1, keepdim=True)
    q_aug = torch.cat([q64, qpos], dim=-1)  # (B, H, Tq, d + 1): bound = q_aug . key_aug
    col = scale * k_step  # (B, H, Tk, 1)
    G, Hkv = kv_groups, H // kv_groups
    nc = cfg.n_chunks
    neg_inf = torch.tensor(-math.inf, dtype=torch.float64)

    groups_per_batch = max(1, max_elements // max(G * Tq * Tk * nc, 1))
    for b in range(B):
        for g0 in range(0, Hkv, groups_per_batch):
            g1 = min(Hkv, g0 + groups_per_batch)
            hs = slice(g0 * G, g1 * G)
            nh = (g1 - g0) * G
            R = nh * Tq
            # bound after chunk m: q . (hi * 2^r * col) + qpos * (2^r - 1) * col, as ONE augmented matmul
            mats = []
            for r in cfg.missing_bits[:-1]:
                key_aug = torch.cat([torch.floor(k_int[b, hs] / 2 ** r) * (2 ** r) * col[b, hs],
                                     (2 ** r - 1) * col[b, hs]], -1)
                mats.append(torch.matmul(q_aug[b, hs], key_aug.transpose(-1, -2)))
            mats.append(torch.matmul(q64[b, hs], (k_int[b, hs] * col[b, hs]).transpose(-1, -2)))  # exact
            if bias is not None:
                bb = bias[min(b, bias.shape[0] - 1)]
                bb = bb[hs] if bb.shape[0] > 1 else bb
                for m in mats:
                    m.add_(bb)
            flat = [m.reshape(-1) for m in mats]

            def per_row(t, extra=()):
                t = t[min(b, t.shape[0] - 1)]
                t = t[hs] if t.shape[0] > 1 else t.expand(nh, *t.shape[1:])
                return t.reshape(R, *extra)

            n_b, s_b = per_row(n_allowed), per_row(n_s)
            o_b = per_row(order, (Tk,)) if order is not None else None
            n_max = int(n_b.max()) if R else 0
            pos_all, valid_all = _positions(torch.arange(n_max), n_b, s_b, o_b, cfg)  # (R, n_max)
            idx_all = (torch.arange(R, dtype=torch.int64) * Tk)[:, None] + pos_all
            keep_buf = torch.zeros((L, R, n_max), dtype=torch.bool)
            ch_buf = torch.zeros((L, R, n_max), dtype=torch.int8)
            log_d = torch.full((L, R), -math.inf, dtype=torch.float64)
            log_z = torch.full((R,), -math.inf, dtype=torch.float64)
            for j0 in range(0, n_max, tile):
                j1 = min(j0 + tile, n_max)
                idx = idx_all[:, j0:j1]
                valid = valid_all[:, j0:j1]
                vals = [_take(m, idx) for m in flat]  # (R, t)
                ld = log_d[:, :, None]
                alive = valid.expand(L, R, j1 - j0).clone()
                ch = alive.to(torch.int8)
                for u in vals[:-1]:
                    alive &= (u - ld) >= lam
                    ch += alive
                s = vals[-1]
                keep = alive & ((s - ld) >= lam)
                log_d = torch.logaddexp(log_d, _lse_last(torch.where(keep, s, neg_inf)))
                log_z = torch.logaddexp(log_z, _lse_last(torch.where(valid, s, neg_inf)))
                keep_buf[:, :, j0:j1] = keep
                ch_buf[:, :, j0:j1] = ch
            allowed_m = torch.zeros(R * Tk, dtype=torch.bool)
            allowed_m[idx_all[valid_all]] = True
            allowed_m = allowed_m.view(R, Tk)
            s_rel = flat[-1].view(R, Tk) - log_z[:, None]  # exact log-probabilities
            kv_view = (L, g1 - g0, G, Tq, n_max)
            ch_u = ch_buf.view(kv_view).amax(2)
            keep_u = keep_buf.view(kv_view).any(2)
            for li in range(L):
                st = stat[li]
                st["n_kept"][b, hs] = keep_buf[li].sum(-1).view(nh, Tq).to(torch.float64)
                st["key_chunks"][b, hs] = ch_buf[li].sum(-1, dtype=torch.float64).view(nh, Tq)
                st["n_full"][b, hs] = (ch_buf[li] == nc).sum(-1).view(nh, Tq).to(torch.float64)
                frac = torch.where(torch.isfinite(log_z), -torch.expm1(log_d[li] - log_z), torch.zeros_like(log_z))
                st["pruned_mass"][b, hs] = frac.clamp_min(0).view(nh, Tq)
                st["n_oracle"][b, hs] = _oracle(allowed_m, s_rel, cfgs[li].threshold).view(nh, Tq)
                kv = kvs[li]
                kv["kv_key_chunks"][b, g0:g1] = ch_u[li].sum(-1, dtype=torch.float64)
                kv["kv_n_full"][b, g0:g1] = (ch_u[li] == nc).sum(-1).to(torch.float64)
                kv["kv_n_values"][b, g0:g1] = keep_u[li].sum(-1).to(torch.float64)
                if compute_output or return_masks:
                    kept_flat = torch.zeros(R * Tk, dtype=torch.bool)
                    kept_flat[idx_all[keep_buf[li]]] = True
                    kept_m = kept_flat.view(R, Tk)
                if compute_output:
                    ld_safe = torch.where(torch.isfinite(log_d[li]), log_d[li], torch.zeros_like(log_d[li]))
                    w = torch.zeros((R, Tk), dtype=torch.float64)
                    r_i, t_i = kept_m.nonzero(as_tuple=True)  # exp only of the kept scores
                    w[r_i, t_i] = torch.exp(flat[-1].view(R, Tk)[r_i, t_i] - ld_safe[r_i])
                    out[li][b, hs] = torch.matmul(w.view(nh, Tq, Tk), v_deq[b, hs])
                    del w
                if return_masks:
                    kept_all[li][b, hs] = kept_m.view(nh, Tq, Tk)
                    cf = torch.zeros(R * Tk, dtype=torch.int8)
                    cf[idx_all[valid_all]] = ch_buf[li][valid_all]
                    chunks_all[li][b, hs] = cf.view(nh, Tq, Tk)
            del mats, flat, keep_buf, ch_buf, idx_all
    n_context = n_allowed.expand(B, H, Tq).to(torch.float64).clone()
    res = [PickResult(out=out[li], n_context=n_context, **stat[li], **kvs[li], kept=kept_all[li], chunks=chunks_all[li])
           for li in range(L)]
    return res[0] if single else res


def _result_buffers(B, H, Tq, Tk, kv_groups, L, return_masks):
    names = ("n_kept", "key_chunks", "n_full", "pruned_mass", "n_oracle")
    stat = [{n: torch.zeros((B, H, Tq), dtype=torch.float64) for n in names} for _ in range(L)]
    kvs = [{n: torch.zeros((B, H // kv_groups, Tq), dtype=torch.float64)
            for n in ("kv_key_chunks", "kv_n_full", "kv_n_values")} for _ in range(L)]
    kept_all = [torch.zeros((B, H, Tq, Tk), dtype=torch.bool) if return_masks else None for _ in range(L)]
    chunks_all = [torch.zeros((B, H, Tq, Tk), dtype=torch.int8) if return_masks else None for _ in range(L)]
    return stat, kvs, kept_all, chunks_all


def _prepare(q, k, v, cfg: PickerConfig, compute_output: bool, kv_groups: int, L: int, return_masks: bool):
    """What the sequential estimator starts from: float64 queries, quantised keys (ints, step),
    dequantised values (or None), the L output buffers (or None) and the result buffers of
    `_result_buffers` (the paper estimator quantises only the unique key heads, block by block)."""
    B, H, Tq, _ = q.shape
    Tk = k.shape[-2]
    k_int, k_step = _quantize_torch(k, cfg.k_bits, "k contains NaN or inf")
    v_deq = None
    if compute_output:
        v_int, v_step = _quantize_torch(v, cfg.v_bits, "v contains NaN or inf")
        v_deq = v_int * v_step
    out = [torch.zeros((B, H, Tq, v.shape[-1]), dtype=torch.float64) if compute_output else None for _ in range(L)]
    return (q.to(torch.float64), k_int, k_step, v_deq, out) + _result_buffers(B, H, Tq, Tk, kv_groups, L, return_masks)


def _oracle(allowed: torch.Tensor, log_p: torch.Tensor, threshold: float) -> torch.Tensor:
    """Allowed tokens whose exact probability exp(log_p) is at or above ``threshold`` (per row)."""
    if threshold <= 0:
        return allowed.sum(-1).to(torch.float64)
    return (allowed & (log_p >= math.log(threshold))).sum(-1).to(torch.float64)


def _shared_heads(x: torch.Tensor, groups: int):
    """x (B, H, T, d) -> (B, H / groups, T, d) when the ``groups`` consecutive heads of every group hold
    identical tensors (GQA keys / values repeated to H heads, as the models hand them over), else None.
    Compared in the input dtype (float32 equality is float64 equality after the exact conversion)."""
    if groups == 1:
        return x
    heads = range(0, x.shape[1], groups)
    if all(torch.equal(x[:, h + j], x[:, h]) for h in heads for j in range(1, groups)):
        return x[:, ::groups]
    return None


def _block_bounds(q_lo, q_up, k_int, col, cfg: PickerConfig, nh: int, Tq: int):
    """`chunk_score_bounds` for one block, with the keys stored once per KV head: q_lo / q_up
    (n_kv, rows, d + 1) hold the augmented queries of every query head sharing a key head (rows =
    heads per key head x Tq), k_int (n_kv, Tk, d) the key integers, col = scale * step (n_kv, Tk, 1).
    Returns the lower and upper bounds (nh, Tq, Tk) per chunk with elementwise the same values as
    `chunk_score_bounds`: its key column floor(k / 2^r) * 2^r * col is written here as
    floor(k * 2^-r) * (2^r * col), the same number (scaling by a power of two is exact, and both
    round the exact product h * 2^r * col once), into one reused augmented key buffer (Tk, d + 1)
    with the column (2^r - 1) * col; one matmul per bound."""
    n_kv, Tk, d = k_int.shape
    key_aug = torch.empty((n_kv, Tk, d + 1), dtype=torch.float64)
    keys, extra = key_aug[..., :d], key_aug[..., d:]
    lowers, uppers = [], []
    for r in cfg.missing_bits:
        if r:
            torch.mul(k_int, 2.0 ** -r, out=keys).floor_().mul_(col * 2.0 ** r)
        else:
            torch.mul(k_int, col, out=keys)
        torch.mul(col, float(2 ** r - 1), out=extra)
        kt = key_aug.transpose(-1, -2)
        lowers.append(torch.matmul(q_lo, kt).view(nh, Tq, Tk))
        uppers.append(lowers[-1] if r == 0 else torch.matmul(q_up, kt).view(nh, Tq, Tk))
    return lowers, uppers


def _count(mask: torch.Tensor) -> torch.Tensor:
    """True entries along the last axis of a boolean tensor, as float64 (a byte sum: several times
    faster than ``mask.sum(-1)``, which widens every entry to int64 first)."""
    return mask.view(torch.uint8).sum(-1, dtype=torch.int32).to(torch.float64)


def _lerp_selects() -> bool:
    """Whether torch.lerp(b, a, w) returns exactly b for w = 0 and exactly a for w = 1 (true of torch's
    formulas, b + w (a - b) below 1/2 and a - (a - b)(1 - w) above, scalar and vectorised): checked
    once on values where the naive b + (a - b) would round, so `_select` never relies on it untested."""
    a = torch.tensor([1.0, 1e-300, 0.3, 7.0, 0.0, 1e-17] * 8, dtype=torch.float64)
    b = torch.tensor([1e-17, 0.3, 1.0, 0.0, 1e-300, 7.0] * 8, dtype=torch.float64)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0] * 8, dtype=torch.float64)
    return torch.equal(torch.lerp(b, a, w), torch.where(w > 0, a, b))


_LERP_SELECTS = _lerp_selects()
_PAPER_BLOCK_ELEMENTS = 1_000_000


def _select(cond, a, b, out, weight, frac: float):
    """torch.where(cond, a, b, out=out) for finite a, b. where's loop branches on every element, so
    it is slow on a well-mixed mask (a fraction ``frac`` of True between about 0.1 and 0.85: 2-3x);
    there the same values come from lerp(b, a, cond as 0 / 1) (branch-free), in ``weight``'s memory."""
    if _LERP_SELECTS and 0.1 <= frac <= 0.85:
        return torch.lerp(b, a, weight.copy_(cond), out=out)
    return torch.where(cond, a, b, out=out)


def _token_pick_paper(q, k, v, cfg: PickerConfig, *, scale, kv_groups, return_masks, thresholds, compute_output,
                      max_elements, allowed, bias):
    """The paper's estimator (Eq. 4-5, out of order; see the module docstring), vectorised over rows and
    tokens: per chunk stage a few tensor operations over (rows x tokens); inputs already validated.

    Keys (and values) repeated over the heads of a GQA group are quantised and bounded once per KV head:
    the query rows of the group share one batched matmul per chunk (rows = heads x decode steps). Every
    bound, denominator and decision is the same floating-point computation as the per-head form
    (tests/test_token_picker.py pins kept tokens, chunks and counts against `_paper_per_head`, the
    per-head computation as it was before issue 25). Blocks of KV groups are quantised and bounded one
    at a time; all of it runs on one torch thread (`token_pick`)."""
    B, H, Tq, d = q.shape
    Tk = k.shape[-2]
    single = thresholds is None
    cfgs = [cfg] if single else [replace(cfg, threshold=float(t)) for t in thresholds]
    L = len(cfgs)
    G, Hkv = kv_groups, H // kv_groups
    nc = cfg.n_chunks
    k_u = _shared_heads(k, G)
    Gk = G if k_u is not None else 1             # query heads per stored key head
    k_src = k if k_u is None else k_u            # (B, H / Gk, Tk, d), quantised block by block below
    v_deq, Gv = None, 1
    if compute_output:
        v_u = _shared_heads(v, G)
        Gv = G if v_u is not None else 1
        v_int, v_step = _quantize_torch(v if v_u is None else v_u, cfg.v_bits, "v contains NaN or inf")
        v_deq = v_int.mul_(v_step)
        del v_int, v_step
    out = [torch.zeros((B, H, Tq, v.shape[-1]), dtype=torch.float64) if compute_output else None for _ in range(L)]
    stat, kvs, kept_all, chunks_all = _result_buffers(B, H, Tq, Tk, kv_groups, L, return_masks)
    q64 = q.to(torch.float64)
    q_lo = torch.cat([q64, q64.clamp_max(0).sum(-1, keepdim=True)], -1)  # (B, H, Tq, d + 1)
    q_up = torch.cat([q64, q64.clamp_min(0).sum(-1, keepdim=True)], -1)
    n_allowed = allowed.sum(-1)
    lams = [math.log(c.prune_below) if c.prune_below > 0 else -math.inf for c in cfgs]
    # blocks of KV groups of at most _PAPER_BLOCK_ELEMENTS (row x token x stage) elements: the block's
    # tensors are then reused from the allocator's free lists instead of fresh pages (15-25% at 4K-8K)
    groups_per_batch = max(1, min(max_elements, _PAPER_BLOCK_ELEMENTS) // max(G * Tq * Tk * (3 * nc + 4), 1))
    for b in range(B):
        for g0 in range(0, Hkv, groups_per_batch):
            g1 = min(Hkv, g0 + groups_per_batch)
            hs = slice(g0 * G, g1 * G)
            nh = (g1 - g0) * G
            a_blk = allowed[min(b, allowed.shape[0] - 1)]
            a_blk = a_blk[hs] if a_blk.shape[0] > 1 else a_blk  # (nh or 1, Tq, Tk)
            a = a_blk.expand(nh, Tq, Tk)
            ks = slice(g0 * G // Gk, g1 * G // Gk)
            nk = nh // Gk
            # a NaN in one copy of a key head unshares the group, an inf is in every copy: quantising the
            # unique heads checks them all
            k_int, k_step = _quantize_torch(k_src[b, ks], cfg.k_bits, "k contains NaN or inf")
            lowers, uppers = _block_bounds(q_lo[b, hs].reshape(nk, Gk * Tq, d + 1),
                                           q_up[b, hs].reshape(nk, Gk * Tq, d + 1), k_int, scale * k_step,
                                           cfg, nh, Tq)
            bb = None
            if bias is not None:                     # the mask's bias on allowed tokens
                bb = bias[min(b, bias.shape[0] - 1)]
                bb = bb[hs] if bb.shape[0] > 1 else bb
            # forbidden tokens: + (-inf), only over the columns that hold one (the causal tail); + 0 elsewhere
            forbidden_cols = (~a_blk).reshape(-1, Tk).any(0).nonzero()
            c0 = int(forbidden_cols[0]) if len(forbidden_cols) else Tk
            minus_inf = torch.zeros(a_blk[..., c0:].shape, dtype=torch.float64).masked_fill_(~a_blk[..., c0:], -math.inf)
            for x in (*lowers, *uppers[:-1]):
                if bb is not None:
                    x.add_(bb)
                x[..., c0:].add_(minus_inf)
            exact = lowers[-1]
            has_tokens = a_blk.any(-1).expand(nh, Tq)
            # one reference level per row: the largest exact score (>= every lower bound, so no exp overflows)
            top = exact.amax(-1, keepdim=True)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            # exp(lower bound), scaled; threshold-independent (in place but for the exact score, kept for log_p)
            e_low = [x.sub_(top).exp_() for x in lowers[:-1]] + [torch.sub(exact, top).exp_()]
            e_exact = e_low[-1]
            log_z = top[..., 0] + torch.log(e_exact.sum(-1))  # (nh, Tq)
            log_p = exact - log_z[..., None]                 # exact log-probabilities (for the oracle)
            log_d0 = top + torch.log(e_low[0].sum(-1, keepdim=True))  # stage 1: every token read
            del lowers
            kv_view = (g1 - g0, G, Tq, Tk)

            def kv_union(x):                         # (nh, Tq, Tk) -> fetched by any head of the group
                xv = x.view(kv_view)
                u = xv[:, 0] | xv[:, 1] if G > 1 else xv[:, 0]
                for j in range(2, G):
                    u |= xv[:, j]
                return u

            n_a, n_a_kv = _count(a), _count(kv_union(a))
            n_a_total = max(float(n_a.sum()), 1.0)
            cur_buf, w, weight = (torch.empty_like(exact) for _ in range(3))  # reused by every threshold
            zero = torch.zeros((), dtype=torch.float64)
            for li, c in enumerate(cfgs):
                lam = lams[li]
                alive = torch.ge(uppers[0], log_d0 + lam).logical_and_(a)  # prune iff exp(u) / D < threshold
                cur = e_low[0]                           # exp(latest lower bound) of every token read
                read, n_read = [a], [n_a]                # read[m]: tokens whose chunk m+1 is fetched
                for m in range(1, nc):                   # read chunk m+1 of the survivors only
                    read.append(alive.clone())
                    n_read.append(_count(alive))
                    cur = _select(alive, e_low[m], cur, cur_buf, weight, float(n_read[-1].sum()) / n_a_total)
                    log_d = top + torch.log(cur.sum(-1, keepdim=True))  # Eq. 5 denominator (log)
                    alive &= uppers[m] >= log_d + lam
                n_kept = _count(alive)
                empty = has_tokens & (n_kept == 0)
                pick = None
                if bool(empty.any()):                    # threshold > 1/n: keep the best lower bound
                    idx = cur.argmax(-1, keepdim=True)
                    pick = torch.zeros_like(alive).scatter_(-1, idx, True) & empty[..., None]
                    alive |= pick
                    n_kept = _count(alive)
                st = stat[li]
                kv = kvs[li]
                st["n_kept"][b, hs] = n_kept
                if pick is not None or return_masks:     # per-token chunk counts
                    ch = torch.stack(read).sum(0, dtype=torch.int8)
                    if pick is not None:
                        ch = torch.where(pick, torch.full_like(ch, nc), ch)
                    st["key_chunks"][b, hs] = ch.sum(-1, dtype=torch.float64)
                    st["n_full"][b, hs] = (ch == nc).sum(-1).to(torch.float64)
                    ch_u = ch.view(kv_view).amax(1)
                    kv["kv_key_chunks"][b, g0:g1] = ch_u.sum(-1, dtype=torch.float64)
                    kv["kv_n_full"][b, g0:g1] = (ch_u == nc).sum(-1).to(torch.float64)
                    if return_masks:
                        chunks_all[li][b, hs] = ch
                else:                                    # counts straight from the nested read sets
                    st["key_chunks"][b, hs] = sum(n_read)
                    st["n_full"][b, hs] = n_read[-1]
                    n_read_kv = [n_a_kv] + [_count(kv_union(r)) for r in read[1:]]
                    kv["kv_key_chunks"][b, g0:g1] = sum(n_read_kv)
                    kv["kv_n_full"][b, g0:g1] = n_read_kv[-1]
                torch.where(alive, e_exact, zero, out=w)
                w_sum = w.sum(-1)
                log_kept = top[..., 0] + torch.log(w_sum)
                st["pruned_mass"][b, hs] = torch.where(has_tokens, -torch.expm1(log_kept - log_z),
                                                       torch.zeros_like(log_z)).clamp_min(0)
                st["n_oracle"][b, hs] = n_a if c.threshold <= 0 else \
                    _count(torch.ge(log_p, math.log(c.threshold)).logical_and_(a))
                kv["kv_n_values"][b, g0:g1] = _count(kv_union(alive))
                if compute_output:
                    vs = slice(g0 * G // Gv, g1 * G // Gv)
                    o = torch.matmul(w.view(nh // Gv, Gv * Tq, Tk), v_deq[b, vs]).view(nh, Tq, -1)
                    out[li][b, hs] = o / torch.where(w_sum > 0, w_sum, 1.0)[..., None]
                if return_masks:
                    kept_all[li][b, hs] = alive
            del uppers, exact, e_low, log_p, cur_buf, w
    n_context = n_allowed.expand(B, H, Tq).to(torch.float64).clone()
    res = [PickResult(out=out[li], n_context=n_context, **stat[li], **kvs[li], kept=kept_all[li], chunks=chunks_all[li])
           for li in range(L)]
    return res[0] if single else res


def dense_quantised_attention(q, k, v, cfg: PickerConfig, *, mask=None, causal=False, scale=None):
    """Dense attention with the same quantised keys and values (threshold 0): isolates quantisation."""
    return token_pick(q, k, v, replace(cfg, threshold=0.0), mask=mask, causal=causal, scale=scale).out


