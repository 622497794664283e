"""Token-Picker (Park, Kang, Han, Kim, Shin, Kim, DAC 2024, arXiv 2407.15131): prune cached tokens whose
attention probability is provably tiny BEFORE their remaining key bits and their value are fetched.

The estimator, for one decode step (one query row against its cached tokens)
----------------------------------------------------------------------------
* Keys are stored quantised: symmetric integers of ``k_bits`` bits with one scale per cached token
  (per KV head), values likewise with ``v_bits`` bits. The softmax of this module ALWAYS uses the
  dequantised keys and values: the "exact probability" every guarantee refers to is
  ``softmax(scale * q . k_deq + mask)`` over ALL allowed tokens, with ``k_deq`` the ``k_bits`` keys that
  are really used (see `quantised_probs`). Queries stay in floating point (they live on chip).
* A key integer is split MSB-first into ``chunk_bits``-wide chunks. After the first m chunks the
  unfetched low bits ``lo`` lie in [0, 2^r - 1] (r = bits still missing; two's complement, so the high
  part is floor(k / 2^r) and the low part is non-negative), hence for every query channel
  ``q_d * lo_d <= max(q_d, 0) * (2^r - 1)`` and

      s_i <= u_i(m) = scale * step_i * ( q . hi_i(m) * 2^r + (2^r - 1) * sum_d max(q_d, 0) ).

  More chunks give a tighter (never looser) bound; all chunks give the exact quantised score.
* Tokens are processed in a stated order (default: the first ``n_sink`` "sink" tokens, then the rest
  from the most recent backwards) while a partial denominator D = sum of exp(s_j) over the tokens
  KEPT so far is accumulated (the hardware keeps a running max m and D_m = sum exp(s_j - m); the
  vectorised code keeps log D, which is the same number). The full softmax denominator contains
  exp(s_i) and every term of D, so

      p_i = exp(s_i) / Z  <=  exp(s_i) / (exp(s_i) + D)  <=  exp(u_i) / (exp(u_i) + D) = sigmoid(u_i - log D).

  Token i is pruned at the first stage where this upper-bound probability falls below the threshold:
  after chunk 1 (its other key chunks and its value are never fetched), after a later chunk, or after
  its full key (its value is never fetched). A kept token adds exp(s_i) to D and its value is fetched.
  The output is the softmax over the kept tokens only (what the hardware computes).
* Decision rule, conservative by a relative ``margin`` (1e-9) so floating-point rounding can never turn
  a bound that equals the threshold into a prune: prune iff bound < threshold * (1 - margin).

So (property tested in tests/test_token_picker.py on real captured tensors and adversarial inputs):
every pruned token's exact probability (quantised keys, full softmax) is below the threshold, and the
probability mass dropped per row is below (number pruned) * threshold.

Two implementations: `pick_reference` (one head, one step, a plain loop over tokens, readable) and
`token_pick` (vectorised with torch over batch x heads x query rows; for a decoder, a teacher-forced
forward with a causal mask is a batch of decode steps: row i is decode step i, pruning against its own
prefix). They agree exactly on which tokens are kept (tested).

Memory accounting (`traffic_bytes`) and a memory-bound decode-attention hardware model
(`topick_accelerator`, `attention_time_energy`) built from attnlib.hw turn the counts into bytes,
seconds and joules. Every constant carries its source or is marked ASSUMPTION in `CONSTANTS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import hw
from .hw import KiB

__all__ = [
    "PickerConfig", "quantize", "dequantize", "processing_order", "chunk_upper_scores",
    "quantised_scores", "quantised_probs", "RefResult", "pick_reference", "PickResult", "token_pick",
    "make_attn_fn", "make_stats_fn", "StatsCollector", "cached", "token_nll", "CONSTANTS", "topick_accelerator", "fetch_bytes", "traffic_bytes",
    "attention_time_energy", "dense_quantised_attention",
]

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
    margin: relative safety margin of the prune decision against floating-point rounding.
    """

    threshold: float = 1e-3
    k_bits: int = 12
    chunk_bits: int = 4
    v_bits: int = 12
    n_sink: int = 4
    order: str = "sink-recent"
    margin: float = 1e-9

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
def quantize(x, bits: int):
    """Symmetric per-row (last axis) quantisation: returns (integers as float64, step (..., 1)).

    x = ints * step with ints in [-(2^(bits-1) - 1), 2^(bits-1) - 1]; an all-zero row gets step 1.
    Works on numpy arrays and torch tensors (float64 result of the same kind).
    """
    qmax = 2 ** (bits - 1) - 1
    if isinstance(x, torch.Tensor):
        x = x.to(torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError("cannot quantise NaN or inf")
        amax = x.abs().amax(dim=-1, keepdim=True)
        step = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        return torch.clamp(torch.round(x / step), -qmax, qmax), step
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


def quantised_scores(q, k, scale: float | None, cfg: PickerConfig):
    """scale * q . k_deq with k quantised to cfg.k_bits (the scores the softmax really uses)."""
    k_int, k_step = quantize(torch.as_tensor(k), cfg.k_bits)
    q = torch.as_tensor(q, dtype=torch.float64)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return scale * torch.matmul(q, (k_int * k_step).transpose(-1, -2))


def quantised_probs(q, k, cfg: PickerConfig, *, scale: float | None = None, mask=None, causal: bool = False):
    """EXACT dense probabilities with the quantised keys, through the reference attnlib.attention
    (float64 numpy): the quantity every pruning guarantee is stated against."""
    from .attention import attention

    q = np.asarray(torch.as_tensor(q, dtype=torch.float64))
    k_int, k_step = quantize(np.asarray(torch.as_tensor(k, dtype=torch.float64)), cfg.k_bits)
    kd = k_int * k_step
    _, p = attention(q, kd, kd, mask=mask, causal=causal, scale=scale, return_probs=True)
    return p


# ----------------------------------------------------------------------------- readable reference
@dataclass
class RefResult:
    """One decode step of one head. ``kept``/``chunks`` per cached token (chunks = key chunks fetched)."""

    out: np.ndarray
    kept: np.ndarray
    chunks: np.ndarray
    order: np.ndarray
    bounds: np.ndarray  # the last upper-bound probability evaluated for each token


def pick_reference(q, k, v, cfg: PickerConfig, *, scale: float | None = None) -> RefResult:
    """Token-Picker for ONE query (d,) against ONE head's cache k (T, d), v (T, dv): a plain loop.

    Written to be read next to the paper; `token_pick` is the fast version (they agree, tested).
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if q.ndim != 1 or k.ndim != 2 or v.ndim != 2 or k.shape[1] != q.shape[0] or v.shape[0] != k.shape[0]:
        raise ValueError(f"pick_reference wants q (d,), k (T, d), v (T, dv); got {q.shape}, {k.shape}, {v.shape}")
    T = k.shape[0]
    if T == 0:
        raise ValueError("Token-Picker needs at least one cached token (empty KV cache)")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(k)) and np.all(np.isfinite(v))):
        raise ValueError("q, k or v contains NaN or inf")
    scale = 1.0 / math.sqrt(q.shape[0]) if scale is None else float(scale)
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
        # exp(u) / (exp(u) + D), written with the running max so nothing overflows
        if run_max == -math.inf:
            return 1.0
        return 1.0 / (1.0 + denom * math.exp(run_max - upper_score))

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
    kv_key_chunks: torch.Tensor
    kv_n_full: torch.Tensor
    kv_n_values: torch.Tensor
    kept: torch.Tensor | None = None
    chunks: torch.Tensor | None = None

    @property
    def pruning_ratio(self) -> float:
        """Tokens in context / tokens kept, summed over every row (ratio of sums)."""
        return float(self.n_context.sum() / self.n_kept.sum().clamp_min(1))


def _allowed_and_bias(mask, causal, Tq, Tk):
    """Boolean allowed (Bm, Hm, Tq, Tk) and an additive bias (or None) from a mask and/or causality."""
    allowed = torch.ones((1, 1, Tq, Tk), dtype=torch.bool)
    bias = None
    if causal:
        if Tq > Tk:
            raise ValueError("causal attention needs Tq <= Tk")
        allowed = allowed & torch.as_tensor(np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq))
    if mask is not None:
        mask = torch.as_tensor(mask)
        while mask.ndim < 4:
            mask = mask.unsqueeze(0)
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


def token_pick(q, k, v, cfg: PickerConfig, **kwargs):
    """Vectorised Token-Picker (see `_token_pick` for the arguments). Runs torch single-threaded: the
    sequential loop is many small operations, which on a shared 2-core machine are several times
    faster without thread hand-offs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _token_pick(q, k, v, cfg, **kwargs)
    finally:
        torch.set_num_threads(n)


def _token_pick(q, k, v, cfg: PickerConfig, *, mask=None, causal: bool = False, scale: float | None = None,
                kv_groups: int = 1, tile: int = 1, return_masks: bool = False, thresholds=None,
                compute_output: bool = True, max_elements: int = 8_000_000):
    """Vectorised Token-Picker: every query row of q (B, H, Tq, d) prunes against its allowed keys.

    k, v (B, H, Tk, d) (GQA keys already repeated to H heads; ``kv_groups`` = H / KV heads, used for
    the shared-fetch accounting). ``mask`` (bool, True = allowed, or additive float) broadcasts to
    (B, H, Tq, Tk); ``causal`` adds the causal mask (the last Tq of Tk positions). ``tile``: tokens
    whose bounds are evaluated against the same partial denominator (1 = strictly sequential, the
    algorithm of `pick_reference`; t > 1 models t tokens in flight in a pipeline: still a valid upper
    bound, slightly fewer prunes). ``thresholds``: a list of thresholds evaluated in one pass (returns
    a list of PickResult; ``cfg.threshold`` is then ignored). Computation in float64 on the CPU.
    """
    q, k, v = (torch.as_tensor(t) for t in (q, k, v))
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"token_pick wants 4-d (B, H, T, d) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Tq, d = q.shape
    Tk = k.shape[-2]
    if Tk == 0:
        raise ValueError("Token-Picker needs at least one cached token (empty KV cache)")
    if k.shape[:2] != (B, H) or v.shape[:3] != (B, H, Tk) or k.shape[-1] != d:
        raise ValueError(f"shape mismatch: q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    if H % kv_groups:
        raise ValueError(f"kv_groups ({kv_groups}) must divide the number of heads ({H})")
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    single = thresholds is None
    cfgs = [cfg] if single else [replace(cfg, threshold=float(t)) for t in thresholds]
    L = len(cfgs)
    lam = torch.tensor([math.log(c.prune_below / (1 - c.prune_below)) if c.prune_below > 0 else -math.inf
                        for c in cfgs], dtype=torch.float64).view(L, 1, 1)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    allowed, bias = _allowed_and_bias(mask, causal, Tq, Tk)
    if kv_groups > 1 and allowed.shape[1] > 1:
        a = allowed.reshape(allowed.shape[0], -1, kv_groups, Tq, Tk)
        if not bool((a == a[:, :, :1]).all()):
            raise ValueError("the heads of a KV group must share one mask for the shared-fetch accounting")
    n_allowed, n_s, order = _order_plan(allowed, cfg)

    q64 = q.to(torch.float64)
    qpos = q64.clamp_min(0).sum(-1, keepdim=True)
    q_aug = torch.cat([q64, qpos], dim=-1)  # (B, H, Tq, d + 1): bound = q_aug . key_aug
    k_int, k_step = quantize(k, cfg.k_bits)
    col = scale * k_step  # (B, H, Tk, 1)
    v_deq = None
    if compute_output:
        v_int, v_step = quantize(v, cfg.v_bits)
        v_deq = v_int * v_step

    G, Hkv = kv_groups, H // kv_groups
    nc = cfg.n_chunks
    out = [torch.zeros((B, H, Tq, v.shape[-1]), dtype=torch.float64) if compute_output else None for _ in range(L)]
    names = ("n_kept", "key_chunks", "n_full", "pruned_mass")
    stat = [{n: torch.zeros((B, H, Tq), dtype=torch.float64) for n in names} for _ in range(L)]
    kvs = [{n: torch.zeros((B, Hkv, Tq), dtype=torch.float64) for n in ("kv_key_chunks", "kv_n_full", "kv_n_values")}
           for _ in range(L)]
    kept_all = [torch.zeros((B, H, Tq, Tk), dtype=torch.bool) if return_masks else None for _ in range(L)]
    chunks_all = [torch.zeros((B, H, Tq, Tk), dtype=torch.int8) if return_masks else None for _ in range(L)]
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


def dense_quantised_attention(q, k, v, cfg: PickerConfig, *, mask=None, causal=False, scale=None):
    """Dense attention with the same quantised keys and values (threshold 0): isolates quantisation."""
    return token_pick(q, k, v, replace(cfg, threshold=0.0), mask=mask, causal=causal, scale=scale).out


# ----------------------------------------------------------------------------- real-model hooks
class StatsCollector:
    """Per-layer counts gathered while a real model runs (one entry per forward call and threshold).

    ``arrays()`` -> {layer: {field: array (calls, n_thresholds, B, heads, rows)}}.
    """

    FIELDS = ("n_context", "n_kept", "key_chunks", "n_full", "pruned_mass", "kv_key_chunks", "kv_n_full",
              "kv_n_values")

    def __init__(self):
        self.layers: dict[int, dict[str, list[np.ndarray]]] = {}

    def add(self, layer: int, results) -> None:
        results = results if isinstance(results, (list, tuple)) else [results]
        slot = self.layers.setdefault(int(layer), {f: [] for f in self.FIELDS})
        for f in self.FIELDS:
            slot[f].append(np.stack([getattr(r, f).numpy() for r in results]))

    def arrays(self) -> dict[int, dict[str, np.ndarray]]:
        return {layer: {f: np.stack(v) for f, v in slot.items()} for layer, slot in sorted(self.layers.items())}


def _rows_mask(mask, rows):
    if mask is None:
        return None
    return mask if mask.shape[-2] == 1 else mask[..., rows, :]


def make_attn_fn(cfg: PickerConfig, *, kv_groups: int = 1, decode_from: int = 0, tile: int = 1,
                 collector: StatsCollector | None = None):
    """An AttnFn ``(q, k, v, mask, scale, layer) -> out`` running Token-Picker inside a real model.

    Query rows >= ``decode_from`` (the generated tokens) use Token-Picker, each against its own causal
    prefix; rows < ``decode_from`` (the prompt, processed densely in a prefill pass) use exact attention.
    ``mask`` is the model's additive mask; with ``mask=None`` and Tq > 1 the causal mask is applied.
    """
    def attn_fn(q, k, v, mask, scale, layer):
        Tq, Tk = q.shape[-2], k.shape[-2]
        start = min(max(int(decode_from) - (Tk - Tq), 0), Tq)  # first row that is a decode step
        causal = mask is None and Tq > 1
        if causal:
            mask = torch.as_tensor(np.where(np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq), 0.0, -np.inf),
                                   dtype=q.dtype)
        out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=torch.float64)
        if start > 0:  # prefill rows: exact attention in the model's own precision (fused kernel)
            m = _rows_mask(mask, slice(0, start))
            out[..., :start, :] = torch.nn.functional.scaled_dot_product_attention(
                q[..., :start, :], k, v, attn_mask=None if m is None else m.to(q.dtype), scale=scale).double()
        if start < Tq:
            res = token_pick(q[..., start:, :].detach().cpu(), k.detach().cpu(), v.detach().cpu(), cfg,
                             mask=None if mask is None else _rows_mask(mask, slice(start, Tq)).detach().cpu(),
                             scale=scale, kv_groups=kv_groups, tile=tile)
            out[..., start:, :] = res.out
            if collector is not None:
                collector.add(layer, res)
        return out.to(dtype=q.dtype, device=q.device)

    return attn_fn


def make_stats_fn(specs, rows, *, kv_groups: int = 1):
    """An AttnFn that computes EXACT attention (the model runs unchanged) and, on the side, Token-Picker
    counts on the query rows ``rows`` (decode steps) of every layer, for every spec
    ``(cfg, thresholds, tile, collector)``: many thresholds and variants from ONE forward pass
    (statistics on the exact model's own tensors)."""
    from .attention import attention_torch

    rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))

    def attn_fn(q, k, v, mask, scale, layer):
        out = attention_torch(q, k, v, mask=mask, scale=scale)
        m = None if mask is None else (mask if mask.shape[-2] == 1 else mask[..., rows, :])
        if mask is None:  # no mask given: decoder rows are causal
            m = torch.where(torch.arange(k.shape[-2])[None, :] <= rows[:, None] + (k.shape[-2] - q.shape[-2]),
                            0.0, -math.inf)
        for cfg, thresholds, tile, collector in specs:
            res = token_pick(q[..., rows, :], k, v, cfg, mask=m, scale=scale, kv_groups=kv_groups, tile=tile,
                             thresholds=list(thresholds), compute_output=False)
            collector.add(layer, res)
        return out

    return attn_fn


def cached(name: str, key: dict, compute):
    """``compute()`` (nested dicts / lists of numpy arrays and numbers) cached under
    cache_dir("token_picker") by ``key``; stored without pickle (see attnlib.cache)."""
    from .cache import cached as _cached

    return _cached("token_picker", name, key, compute)


def token_nll(rm, windows, attn_fn=None) -> np.ndarray:
    """Per-token NLL (nats), (n_windows, T-1): entry t scores token t+1 from tokens 0..t (teacher
    forcing through `attnlib.models.logits`, all windows (equal lengths) in one batch)."""
    from .models import logits

    ids = torch.tensor(windows, dtype=torch.long)
    out = logits(rm, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, attn_fn=attn_fn)
    logp = torch.log_softmax(out[:, :-1].float(), dim=-1)
    return (-logp.gather(-1, ids[:, 1:, None]).squeeze(-1)).double().numpy()


# ----------------------------------------------------------------------------- hardware model
#: Every constant of the decode-attention hardware model: (value, source). The Token-Picker paper's
#: own accelerator parameters are not available to this workbook (card: "[unconfirmed] ... all hardware
#: parameters"), so the machine below is a stated, generic memory-bound design.
CONSTANTS = {
    "dram_bandwidth_Bps": (256e9, "JEDEC JESD235 HBM2: one stack, 8 channels x 128 bit x 2 Gb/s = 256 GB/s "
                                  "(ASSUMPTION: one stack serves the attention unit)"),
    "dram_kind": ("dram_hbm2", "O'Connor et al. MICRO'17: HBM2 ~3.9 pJ/bit (shared energy table)"),
    "access_granularity_B": (32, "JESD235 HBM2 pseudo-channel access = 32 B; every fetch is rounded up to it"),
    "node_nm": (28, "ASSUMPTION: a 28 nm accelerator (node not available); on-chip energies scaled from 45 nm"),
    "clock_hz": (1e9, "ASSUMPTION: 1 GHz"),
    "pes": (1024, "ASSUMPTION: 1024 16-bit MAC lanes (enough that dense decode attention is memory-bound; swept)"),
    "vector_lanes": (32, "ASSUMPTION: sqrt(PEs) exp/compare lanes (attnlib.hw default)"),
    "buffer_bytes": (256 * KiB, "ASSUMPTION: 256 KiB on-chip buffer holding the fetched chunks/values"),
    "mac_bits": (16, "ASSUMPTION: 16-bit integer MACs (keys <= 12 bit fit); int16 MAC energy of the shared table"),
    "chunk_mac_fraction": (None, "ASSUMPTION: a chunk_bits x 16-bit partial MAC costs chunk_bits/16 of a 16-bit MAC "
                                 "(shift-add multiplier, energy linear in one operand's width)"),
    "scale_bytes": (2, "ASSUMPTION: one fp16 scale per cached token per KV head for K and one for V"),
    "overlap": ("max", "ASSUMPTION: DRAM transfer, MACs and vector ops overlap perfectly (time = max); "
                       "out-of-order on-demand fetches keep enough requests in flight to hide latency"),
    "static_power": (0.0, "ASSUMPTION: no leakage/static energy (energy = dynamic only; conservative for the "
                          "faster design)"),
}


def topick_accelerator(*, pes: int | None = None, dram_bandwidth: float | None = None, node_nm: float | None = None,
                       dram_kind: str | None = None, buffer_bytes: float | None = None) -> hw.Accelerator:
    """The stated decode-attention accelerator (CONSTANTS), optionally with one constant changed."""
    c = {k: v for k, (v, _) in CONSTANTS.items()}
    return hw.make_accelerator(
        "Token-Picker-style decode attention unit", pes=pes or c["pes"], clock_hz=c["clock_hz"], bits=c["mac_bits"],
        buffer_bytes=buffer_bytes or c["buffer_bytes"], dram_bandwidth=dram_bandwidth or c["dram_bandwidth_Bps"],
        node_nm=node_nm or c["node_nm"], dram_kind=dram_kind or c["dram_kind"], vector_lanes=c["vector_lanes"],
        sources={k: s for k, (_, s) in CONSTANTS.items()})


def fetch_bytes(bits: int, d: int, granularity: int = 1) -> int:
    """Bytes of one fetch of ``d`` elements of ``bits`` bits, rounded up to the access granularity."""
    raw = bits * d / 8
    return int(math.ceil(raw / granularity) * granularity)


def traffic_bytes(counts: dict, cfg: PickerConfig, d_head: int, *, shared_kv: bool = True,
                  granularity: int | None = None, scale_bytes: int | None = None) -> dict:
    """Off-chip bytes per decode step (element-wise over the count arrays).

    counts: arrays from PickResult / StatsCollector. With ``shared_kv`` (GQA, the real model) the KV-head
    union counts are used and the dense baseline reads each KV head once; otherwise every query head
    is charged its own fetches (MHA-equivalent accounting). Key chunks are stored as separate
    chunk planes, each token's chunk a separate fetch rounded to the access granularity.
    Returns dict of arrays: chunk1, more_chunks, values, scales, total, and dense_keys, dense_values,
    dense_scales, dense_total (the dense baseline reads the whole cache at the same precision).
    """
    g = CONSTANTS["access_granularity_B"][0] if granularity is None else granularity
    sb = CONSTANTS["scale_bytes"][0] if scale_bytes is None else scale_bytes
    ctx = np.asarray(counts["n_context"], dtype=np.float64)
    if shared_kv:
        chunks, values = np.asarray(counts["kv_key_chunks"]), np.asarray(counts["kv_n_values"])
        ctx = _kv_context(ctx, chunks.shape)
    else:
        chunks, values = np.asarray(counts["key_chunks"]), np.asarray(counts["n_kept"])
    widths = cfg.chunk_widths
    b_first = fetch_bytes(widths[0], d_head, g)
    # the later chunks: charged at the mean width of chunks 2..n (they are equal unless bits % chunk)
    b_more = (np.mean([fetch_bytes(w, d_head, g) for w in widths[1:]]) if len(widths) > 1 else 0.0)
    b_val = fetch_bytes(cfg.v_bits, d_head, g)
    out = dict(chunk1=ctx * b_first, more_chunks=(chunks - ctx) * b_more, values=values * b_val,
               scales=ctx * sb + values * sb)
    out["total"] = out["chunk1"] + out["more_chunks"] + out["values"] + out["scales"]
    out["dense_keys"] = ctx * fetch_bytes(cfg.k_bits, d_head, g)
    out["dense_values"] = ctx * b_val
    out["dense_scales"] = 2 * ctx * sb
    out["dense_total"] = out["dense_keys"] + out["dense_values"] + out["dense_scales"]
    return out


def _kv_context(ctx, kv_shape):
    """The context count per KV head (identical for every query head of a group): take head 0 of each group."""
    ctx = np.asarray(ctx)
    h, hkv = ctx.shape[-2], kv_shape[-2]
    return ctx.reshape(ctx.shape[:-2] + (hkv, h // hkv, ctx.shape[-1]))[..., 0, :]


def attention_time_energy(counts: dict, cfg: PickerConfig, d_head: int, acc: hw.Accelerator | None = None, *,
                          shared_kv: bool = True, granularity: int | None = None) -> dict:
    """Modelled time (s) and energy (J) of decode attention, dense vs Token-Picker, per decode step.

    Arrays are summed over the head axis (axis -2): each entry of the result is per decode step (and
    per layer / window / batch if those axes are present in the counts). Work counted:
    DRAM bytes (`traffic_bytes`); on-chip buffer: every fetched byte written once and read once per
    query head of its group; MACs: dense = 2 * d per (query head, token) (QK and PV); Token-Picker =
    d partial MACs per key chunk evaluated (energy scaled by chunk width) + d per kept token (PV);
    vector ops: dense = 1 exp per (query head, token); Token-Picker = 1 exp + 1 compare per bound
    evaluated (one per chunk) + 1 exp per kept token.
    """
    acc = acc or topick_accelerator()
    t = traffic_bytes(counts, cfg, d_head, shared_kv=shared_kv, granularity=granularity)
    heads_axis = -2
    qh_ctx = np.asarray(counts["n_context"], dtype=np.float64)
    n_q = qh_ctx.shape[heads_axis]
    n_kv = np.asarray(counts["kv_key_chunks"]).shape[heads_axis] if shared_kv else n_q
    group = n_q // n_kv
    mac16 = acc.compute.mac_pj
    chunk_frac = np.array(cfg.chunk_widths, dtype=float) / CONSTANTS["mac_bits"][0]

    def tot(x):
        return np.asarray(x, dtype=np.float64).sum(axis=heads_axis)

    res = {}
    for name in ("dense", "topick"):
        if name == "dense":
            dram_b = tot(t["dense_total"])
            macs = 2 * d_head * tot(qh_ctx)
            mac_e = macs * mac16
            vec = tot(qh_ctx)
        else:
            dram_b = tot(t["total"])
            chunk_evals = tot(counts["key_chunks"])
            kept = tot(counts["n_kept"])
            macs = d_head * (chunk_evals + kept)
            # energy: the first chunk of each token at width[0], later chunks at their mean width
            first = tot(qh_ctx)
            later_frac = chunk_frac[1:].mean() if len(chunk_frac) > 1 else 0.0
            mac_e = d_head * mac16 * (first * chunk_frac[0] + (chunk_evals - first) * later_frac + kept)
            vec = 2 * chunk_evals + kept
        sram_b = dram_b * (1 + group)  # written once, read by each query head of the group
        t_dram = dram_b / acc.dram.bandwidth
        t_mac = macs / acc.compute.peak_macs_per_s
        t_vec = vec / (acc.vector.lanes * acc.vector.clock_hz)
        e = dict(dram=dram_b * 8 * acc.dram.read_pj_per_bit * 1e-12,
                 sram=sram_b * 8 * acc.buffer.read_pj_per_bit * 1e-12,
                 mac=mac_e * 1e-12, vector=vec * acc.vector.op_pj * 1e-12)
        res[name] = dict(time_s=np.maximum(np.maximum(t_dram, t_mac), t_vec), t_dram=t_dram, t_mac=t_mac,
                         t_vec=t_vec, bytes=dram_b, energy_j=sum(e.values()), energy=e)
    return res
