"""A3 (Ham et al., HPCA 2020, arXiv 2002.10941): approximate attention by greedy candidate search, and
cost models of the base and approximate A3 pipelines.

The algorithm (paper card: /work/shared/papers/a3.md; details marked [unconfirmed] there are stated
here as this module's interpretation):

1. Preprocessing, once per key matrix K (n x d): sort every column of K, keeping row indices.
2. Candidate selection for one query q (M iterations): column j's component products q_j * K[i, j]
   are sorted by step 1 (ascending if q_j > 0, descending if q_j < 0), so a "max pointer" at one end
   and a "min pointer" at the other end of each column give that column's largest and smallest
   remaining product. Each iteration takes the largest head over all d max pointers (a max-heap /
   comparator tree over d entries) and adds it to its row's partial score, and likewise the smallest
   head over the min pointers; the two pointers advance. INTERPRETATION [unconfirmed detail]: a max
   pointer stops when its head product is <= 0 and a min pointer when its head is >= 0, so the two
   pointers of a column never cross and, once every non-zero product has been taken, the partial
   score of every row equals its exact dot product. Rows whose partial score is > 0 (``score_floor``)
   become candidates. Because the columns are sorted, the max-side picks of M iterations are exactly
   the M largest positive products of q * K over all (i, j), and the min-side picks the M most
   negative ones: that is what the vectorised implementation computes with ``topk``.
3. Post-scoring: exact (scaled) scores for candidates only; keep those within ``T`` (in logit units)
   of the largest candidate score, i.e. whose softmax weight is at least exp(-T) of the largest one;
   softmax and the weighted sum of values over the survivors only.

Two implementations:
- `a3_single_query_reference`: a plain step-by-step version for one query with explicit sorted
  columns, pointers and heaps (for a student; slow).
- `a3_attention`: vectorised over any leading dims and queries (torch), same results.
`a3_attn_fn` wraps the vectorised version in the AttnFn signature of attnlib.models so the real
encoder/decoder run with A3 attention in every layer.

Hardware (section "pipeline model" below): the base A3 pipeline (dot-product, exponent, output
modules) and the approximate pipeline (plus the candidate selection module), as cycles and energy per
query at a stated clock and node, with energies from the shared table attnlib.hw (node 40 nm).
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .hw import energy_pj, mac_energy_pj, sram_energy_pj_per_bit

__all__ = [
    "SortedKeys", "preprocess_keys", "a3_single_query_reference", "A3Result", "a3_attention",
    "resolve_m", "candidate_sweep", "A3Stats", "a3_attn_fn", "A3Hardware", "ModuleCost", "PipelineCost",
    "base_pipeline", "approx_pipeline", "HW_CONSTANTS", "cpu_exact_single", "cpu_exact_batched",
    "measure_cpu", "CpuTiming", "mask_to_allowed", "stream_costs", "smallest_setting",
]


# ============================================================================ threads
#: Torch threads used inside the A3 simulation. The work is many small per-head blocks, which on a
#: shared 2-core machine ran ~5-10x faster single-threaded than with 2 OpenMP threads (measured here
#: under load); None keeps torch's setting.
SIM_THREADS: int | None = 1


class _threads:
    def __enter__(self):
        self.saved = torch.get_num_threads()
        if SIM_THREADS is not None and SIM_THREADS != self.saved:
            torch.set_num_threads(SIM_THREADS)

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)
        return False


def _with_threads(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _threads():
            return fn(*args, **kwargs)

    return wrapper


# ============================================================================ validation
def _validate(q, k, v, M, m_frac, T):
    if q.ndim < 1 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"A3 needs q (..., d), k (..., n, d), v (..., n, dv); got q{tuple(q.shape)} "
                         f"k{tuple(k.shape)} v{tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query width {q.shape[-1]} != key width {k.shape[-1]} "
                         f"(q{tuple(q.shape)}, k{tuple(k.shape)})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"keys ({k.shape[-2]}) and values ({v.shape[-2]}) hold a different number of rows")
    if k.shape[-2] == 0:
        raise ValueError("A3 over an empty key set (n = 0) is undefined")
    if (M is None) == (m_frac is None):
        raise ValueError("give exactly one of M (iterations) or m_frac (iterations per allowed key)")
    if M is not None and (int(M) != M or M <= 0):
        raise ValueError(f"M (greedy iterations) must be a positive integer, got {M}")
    if m_frac is not None and not (m_frac > 0 and math.isfinite(m_frac)):
        raise ValueError(f"m_frac must be a positive finite number, got {m_frac}")
    if not (T >= 0) or (isinstance(T, float) and math.isnan(T)):
        raise ValueError(f"threshold T must be >= 0 (math.inf keeps every candidate), got {T}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        finite = torch.isfinite(t).all() if isinstance(t, torch.Tensor) else np.isfinite(t).all()
        if not bool(finite):
            raise ValueError(f"{name} contains NaN or inf")


def resolve_m(n_allowed, *, M=None, m_frac=None, d: int):
    """Iterations per query: M itself, or ceil(m_frac * n_allowed); capped at n_allowed * d (all products)."""
    n_allowed = np.asarray(n_allowed) if not isinstance(n_allowed, torch.Tensor) else n_allowed
    if M is not None:
        m = n_allowed * 0 + int(M)
    else:
        m = (n_allowed * m_frac).ceil() if isinstance(n_allowed, torch.Tensor) else np.ceil(n_allowed * m_frac)
    cap = n_allowed * d
    if isinstance(m, torch.Tensor):
        return torch.minimum(m.long(), cap.long()).clamp_min(1)
    return np.maximum(np.minimum(m.astype(np.int64), cap.astype(np.int64)), 1)


def mask_to_allowed(mask, *, very_negative: float = -1e4):
    """Boolean "allowed" from a mask: bool masks are True where allowed; additive float masks allow
    entries that are finite and above ``very_negative`` (the models use -inf or dtype-min for forbidden)."""
    if mask is None:
        return None
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if mask.dtype == torch.bool:
        return mask
    return torch.isfinite(mask) & (mask > very_negative)


# ============================================================================ step-by-step version
@dataclass
class SortedKeys:
    """Step 1 of A3: every column of K sorted ascending, with the row index of each entry."""

    values: np.ndarray  # (n, d): values[r, j] = r-th smallest entry of column j
    rows: np.ndarray    # (n, d): the row of K it came from


def preprocess_keys(k: np.ndarray) -> SortedKeys:
    """Sort each column of K (n x d), keeping row indices (done once per key matrix)."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"preprocess_keys takes one key matrix (n, d), got shape {k.shape}")
    order = np.argsort(k, axis=0, kind="stable")
    return SortedKeys(np.take_along_axis(k, order, axis=0), order)


def a3_single_query_reference(q, k, v, *, M: int, T: float = math.inf, scale: float | None = None,
                              allowed=None, score_floor: float = 0.0) -> dict:
    """A3 for ONE query, written out step by step (sorted columns, pointers, two heaps).

    q (d,), k (n, d), v (n, dv); ``allowed`` optional bool (n,) (e.g. a causal row). Returns a dict
    with out (dv,), candidates (sorted row indices), survivors, partial (n,) greedy scores,
    max_picks / min_picks (iterations that took a product), and the exact scores of candidates.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    _validate(q, k, v, M, None, T)
    if q.ndim != 1 or k.ndim != 2:
        raise ValueError("the reference version takes one query q (d,) and one key matrix k (n, d)")
    n, d = k.shape
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    rows_allowed = np.arange(n) if allowed is None else np.flatnonzero(np.asarray(allowed, dtype=bool))
    if rows_allowed.size == 0:
        return dict(out=np.zeros(v.shape[-1]), candidates=np.array([], int), survivors=np.array([], int),
                    partial=np.zeros(n), max_picks=0, min_picks=0)

    # ---- step 1: preprocessing (only the keys this query may attend to are in the sorted columns)
    sk = preprocess_keys(k[rows_allowed])
    m = len(rows_allowed)

    # ---- step 2: candidate selection
    # column j: products q_j * sorted_values[:, j] are ascending if q_j > 0, descending if q_j < 0.
    # max pointer starts at the end holding the largest product, min pointer at the other end.
    max_ptr, min_ptr, max_step, min_step = {}, {}, {}, {}
    max_heap, min_heap = [], []
    for j in range(d):
        if q[j] == 0:
            continue  # every product in this column is 0: it can never change a score
        hi, lo = (m - 1, 0) if q[j] > 0 else (0, m - 1)
        max_ptr[j], max_step[j] = hi, (-1 if q[j] > 0 else +1)
        min_ptr[j], min_step[j] = lo, (+1 if q[j] > 0 else -1)
        heapq.heappush(max_heap, (-(q[j] * sk.values[hi, j]), j))   # python heaps are min-heaps
        heapq.heappush(min_heap, (q[j] * sk.values[lo, j], j))

    partial = np.zeros(n)
    max_picks = min_picks = 0
    for _ in range(int(M)):
        # largest remaining product over all columns
        if max_heap and -max_heap[0][0] > 0:
            neg_p, j = heapq.heappop(max_heap)
            partial[rows_allowed[sk.rows[max_ptr[j], j]]] += -neg_p
            max_picks += 1
            max_ptr[j] += max_step[j]
            if 0 <= max_ptr[j] < m:
                heapq.heappush(max_heap, (-(q[j] * sk.values[max_ptr[j], j]), j))
        # smallest (most negative) remaining product over all columns
        if min_heap and min_heap[0][0] < 0:
            p, j = heapq.heappop(min_heap)
            partial[rows_allowed[sk.rows[min_ptr[j], j]]] += p
            min_picks += 1
            min_ptr[j] += min_step[j]
            if 0 <= min_ptr[j] < m:
                heapq.heappush(min_heap, (q[j] * sk.values[min_ptr[j], j], j))

    candidates = [i for i in rows_allowed if partial[i] > score_floor]
    if not candidates:  # nothing positive: keep the best row so that softmax is defined
        candidates = [rows_allowed[int(np.argmax(partial[rows_allowed]))]]

    # ---- step 3: post-scoring over candidates only
    scores = {i: scale * float(q @ k[i]) for i in candidates}
    best = max(scores.values())
    survivors = [i for i in candidates if scores[i] >= best - T]
    weights = np.array([math.exp(scores[i] - best) for i in survivors])
    weights /= weights.sum()
    out = sum(w * v[i] for w, i in zip(weights, survivors))
    return dict(out=np.asarray(out), candidates=np.array(sorted(candidates)), survivors=np.array(sorted(survivors)),
                partial=partial, max_picks=max_picks, min_picks=min_picks, scores=scores)


# ============================================================================ vectorised version
@dataclass
class A3Result:
    """Output of `a3_attention`. Count tensors have the leading shape of q without d: (..., Tq)."""

    out: torch.Tensor
    n_allowed: torch.Tensor
    m: torch.Tensor            # iterations granted to each query
    max_picks: torch.Tensor    # iterations that took a positive product
    min_picks: torch.Tensor
    n_candidates: torch.Tensor
    n_survivors: torch.Tensor
    candidates: torch.Tensor | None = None  # bool (..., Tq, Tk) when requested
    survivors: torch.Tensor | None = None


def _as_tensor(x, dtype=None):
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if dtype is not None:
        t = t.to(dtype)
    return t


def _greedy_partial(P: torch.Tensor, allowed: torch.Tensor, m_rows: torch.Tensor, d: int):
    """Greedy partial scores of each row of P (r, n*d products, forbidden ones zero) after m_rows
    iterations. Returns partial (r, n), max_picks (r,), min_picks (r,)."""
    r, nd = P.shape
    n = nd // d
    mmax = int(min(int(m_rows.max()), nd))
    rank = torch.arange(mmax, device=P.device)[None, :]
    within = rank < m_rows[:, None]
    top_v, top_i = torch.topk(P, mmax, dim=1, largest=True, sorted=True)
    take_hi = within & (top_v > 0)
    bot_v, bot_i = torch.topk(P, mmax, dim=1, largest=False, sorted=True)
    take_lo = within & (bot_v < 0)
    partial = torch.zeros(r, n, dtype=P.dtype, device=P.device)
    partial.scatter_add_(1, torch.div(top_i, d, rounding_mode="floor"), torch.where(take_hi, top_v, 0.0))
    partial.scatter_add_(1, torch.div(bot_i, d, rounding_mode="floor"), torch.where(take_lo, bot_v, 0.0))
    return partial, take_hi.sum(1), take_lo.sum(1)


def _candidates(partial, allowed, score_floor):
    cand = allowed & (partial > score_floor)
    empty = ~cand.any(-1) & allowed.any(-1)
    if bool(empty.any()):  # fallback: the best allowed row
        best = torch.where(allowed, partial, torch.full_like(partial, -math.inf)).argmax(-1)
        fix = torch.zeros_like(cand)
        fix[torch.arange(len(best), device=cand.device), best] = True
        cand = torch.where(empty[:, None], fix, cand)
    return cand


@_with_threads
def a3_attention(q, k, v, *, M: int | None = None, m_frac: float | None = None, T: float = math.inf,
                 scale: float | None = None, mask=None, causal: bool = False, score_floor: float = 0.0,
                 return_sets: bool = False, max_elements: int = 1 << 20) -> A3Result:
    """A3 attention, vectorised (torch; numpy inputs accepted) over leading dims and queries.

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv). ``M``: greedy iterations per query, or
    ``m_frac``: ceil(m_frac * allowed keys) iterations per query (each query of a causal decoder
    searches only its allowed keys). ``T``: post-scoring threshold in logit units (scaled scores).
    ``mask``: bool (True = allowed) or additive float (0 allowed, -inf / very negative forbidden; the
    finite part is added to the post-scoring logits), broadcastable to (..., Tq, Tk). ``score_floor``:
    rows whose greedy partial score exceeds it are candidates (paper: 0; -inf makes every allowed row
    a candidate). ``max_elements`` bounds the product tensor held at once (memory knob only).
    """
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    _validate(q, k, v, M, m_frac, T)
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    d, Tq, Tk, dv = q.shape[-1], q.shape[-2], k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q = q.expand(*lead, Tq, d).reshape(-1, Tq, d)
    k = k.expand(*lead, Tk, d).reshape(-1, Tk, d)
    v = v.expand(*lead, Tk, dv).reshape(-1, Tk, dv)
    L = q.shape[0]

    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    bias = None
    if causal:
        if Tq > Tk:
            raise ValueError("causal A3 needs Tq <= Tk")
        allowed = torch.tril(torch.ones(Tq, Tk, dtype=torch.bool), diagonal=Tk - Tq)
    if mask is not None:
        mask = _as_tensor(mask)
        if mask.dtype != torch.bool:
            if torch.isnan(mask).any():
                raise ValueError("mask contains NaN")
            bias = torch.where(mask_to_allowed(mask), mask.to(dtype), torch.zeros((), dtype=dtype))
            bias = bias.expand(*lead, Tq, Tk).reshape(L, Tq, Tk)
        allowed = allowed & mask_to_allowed(mask)
    allowed = allowed.expand(*lead, Tq, Tk).reshape(L, Tq, Tk)

    out = torch.zeros(L, Tq, dv, dtype=dtype)
    counts = {name: torch.zeros(L, Tq, dtype=torch.long) for name in
              ("n_allowed", "m", "max_picks", "min_picks", "n_candidates", "n_survivors")}
    cand_all = torch.zeros(L, Tq, Tk, dtype=torch.bool) if return_sets else None
    surv_all = torch.zeros(L, Tq, Tk, dtype=torch.bool) if return_sets else None

    # blocks of (heads, queries) so that the product tensor holds at most max_elements numbers
    per_query = Tk * d
    q_block = max(1, min(Tq, max_elements // per_query))
    if Tq > 16 and not torch.equal(allowed[:, :1].expand_as(allowed), allowed):
        q_block = min(q_block, max(16, Tq // 4))  # smaller query blocks let causal rows skip future keys
    l_block = max(1, max_elements // (per_query * q_block))
    for l0 in range(0, L, l_block):
        l1 = min(L, l0 + l_block)
        for t0 in range(0, Tq, q_block):
            t1 = min(Tq, t0 + q_block)
            al = allowed[l0:l1, t0:t1]
            # keys after the last allowed one (causal future, right padding) never take part: trim them
            used = al.reshape(-1, Tk).any(0).nonzero()
            tk = int(used[-1]) + 1 if used.numel() else 1
            al = al[..., :tk]
            qb, kb, vb = q[l0:l1, t0:t1], k[l0:l1, :tk], v[l0:l1, :tk]
            g, tq = qb.shape[0], qb.shape[1]
            P = qb[:, :, None, :] * kb[:, None, :, :]            # (g, tq, Tk, d) component products
            if not bool(al.all()):
                P.mul_(al[..., None])                             # forbidden keys take no part
            P = P.reshape(g * tq, tk * d)
            alf = al.reshape(g * tq, tk)
            n_allowed = alf.sum(1)
            m_rows = resolve_m(n_allowed, M=M, m_frac=m_frac, d=d)
            partial, hi, lo = _greedy_partial(P, alf, m_rows, d)
            del P
            cand = _candidates(partial, alf, score_floor) & alf
            s = torch.matmul(qb, kb.transpose(-1, -2)) * scale      # post-scoring (only candidates used)
            if bias is not None:
                s = s + bias[l0:l1, t0:t1, :tk]
            s = s.reshape(g * tq, tk)
            s_c = torch.where(cand, s, torch.full_like(s, -math.inf))
            best = s_c.amax(-1, keepdim=True)
            best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
            surv = cand & (s_c >= best - T)
            e = torch.where(surv, torch.exp(s_c - best), torch.zeros_like(s))
            den = e.sum(-1, keepdim=True)
            p = torch.where(den > 0, e / den.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(e))
            out[l0:l1, t0:t1] = torch.matmul(p.reshape(g, tq, tk), vb)
            for name, val in (("n_allowed", n_allowed), ("m", torch.where(n_allowed > 0, m_rows, 0)),
                              ("max_picks", hi), ("min_picks", lo), ("n_candidates", cand.sum(1)),
                              ("n_survivors", surv.sum(1))):
                counts[name][l0:l1, t0:t1] = val.reshape(g, tq)
            if return_sets:
                cand_all[l0:l1, t0:t1, :tk] = cand.reshape(g, tq, tk)
                surv_all[l0:l1, t0:t1, :tk] = surv.reshape(g, tq, tk)

    shape = (*lead, Tq)
    res = A3Result(out.reshape(*lead, Tq, dv), **{n: c.reshape(shape) for n, c in counts.items()})
    if return_sets:
        res.candidates = cand_all.reshape(*lead, Tq, Tk)
        res.survivors = surv_all.reshape(*lead, Tq, Tk)
    return res


# ============================================================================ sweeps (candidates, recall)
@_with_threads
def candidate_sweep(q, k, *, m_fracs=None, Ms=None, ks=(1, 8, 32), Ts=(), scale: float | None = None,
                    mask=None, causal: bool = False, score_floor: float = 0.0,
                    max_elements: int = 1 << 23) -> dict:
    """Candidate counts and recall of the true top-k for many M at once (one topk per block).

    Returns a dict of 1-D numpy arrays over all queries (flattened): "n_allowed", and for each
    setting index i (of m_fracs or Ms): "m"[i], "max_picks"[i], "n_candidates"[i], "recall@k"[i]
    (fraction of the true top-k allowed keys by exact score that are candidates; k capped at the
    allowed count), "mass_recall"[i] (exact softmax weight held by the candidates), "min_picks"[i]
    and "n_survivors@T"[i] for each T in Ts. Arrays are shaped (n_settings, n_queries).
    """
    if (m_fracs is None) == (Ms is None):
        raise ValueError("give exactly one of m_fracs or Ms")
    settings = list(m_fracs if m_fracs is not None else Ms)
    if not settings:
        raise ValueError("empty sweep")
    q, k = _as_tensor(q).float(), _as_tensor(k).float()
    _validate(q, k, k, 1, None, math.inf)
    d, Tq, Tk = q.shape[-1], q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q = q.expand(*lead, Tq, d).reshape(-1, Tq, d)
    k = k.expand(*lead, Tk, d).reshape(-1, Tk, d)
    L = q.shape[0]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    if causal:
        allowed = torch.tril(torch.ones(Tq, Tk, dtype=torch.bool), diagonal=Tk - Tq)
    if mask is not None:
        allowed = allowed & mask_to_allowed(_as_tensor(mask))
    allowed = allowed.expand(*lead, Tq, Tk).reshape(L, Tq, Tk)

    S = len(settings)
    acc = {"n_allowed": [], "m": [[] for _ in range(S)], "max_picks": [[] for _ in range(S)],
           "min_picks": [[] for _ in range(S)], "n_candidates": [[] for _ in range(S)],
           "mass_recall": [[] for _ in range(S)]}
    for kk in ks:
        acc[f"recall@{kk}"] = [[] for _ in range(S)]
    for T in Ts:
        acc[f"n_survivors@{T:g}"] = [[] for _ in range(S)]

    per_query = Tk * d
    q_block = max(1, min(Tq, max_elements // per_query))
    l_block = max(1, max_elements // (per_query * q_block))
    for l0 in range(0, L, l_block):
        for t0 in range(0, Tq, q_block):
            qb, kb = q[l0:l0 + l_block, t0:t0 + q_block], k[l0:l0 + l_block]
            al = allowed[l0:l0 + l_block, t0:t0 + q_block]
            g, tq = qb.shape[0], qb.shape[1]
            r = g * tq
            P = qb[:, :, None, :] * kb[:, None, :, :]
            if not bool(al.all()):
                P.mul_(al[..., None])
            P = P.reshape(r, per_query)
            s = (torch.matmul(qb, kb.transpose(-1, -2)) * scale).reshape(r, Tk)
            al = al.reshape(r, Tk)
            s = torch.where(al, s, torch.full_like(s, -math.inf))
            n_allowed = al.sum(1)
            ms = [resolve_m(n_allowed, M=(None if m_fracs is not None else st),
                            m_frac=(st if m_fracs is not None else None), d=d) for st in settings]
            mmax = int(max(int(m.max()) for m in ms))
            top_v, top_i = torch.topk(P, mmax, dim=1, largest=True, sorted=True)
            bot_v, bot_i = torch.topk(P, mmax, dim=1, largest=False, sorted=True)
            del P
            top_r, bot_r = torch.div(top_i, d, rounding_mode="floor"), torch.div(bot_i, d, rounding_mode="floor")
            kmax = min(max(ks), Tk)
            order = torch.topk(s, kmax, dim=1).indices
            probs = torch.softmax(s, dim=1)  # exact attention weights (mask bias not included)
            acc["n_allowed"].append(n_allowed)
            rank = torch.arange(mmax)[None, :]
            for i, m in enumerate(ms):
                within = rank < m[:, None]
                take_hi, take_lo = within & (top_v > 0), within & (bot_v < 0)
                partial = torch.zeros(r, Tk)
                partial.scatter_add_(1, top_r, torch.where(take_hi, top_v, 0.0))
                partial.scatter_add_(1, bot_r, torch.where(take_lo, bot_v, 0.0))
                cand = _candidates(partial, al, score_floor) & al
                acc["m"][i].append(m)
                acc["max_picks"][i].append(take_hi.sum(1))
                acc["min_picks"][i].append(take_lo.sum(1))
                acc["n_candidates"][i].append(cand.sum(1))
                acc["mass_recall"][i].append((probs * cand).sum(1).double())
                for kk in ks:
                    ke = min(kk, Tk)
                    kq = torch.clamp(n_allowed, max=ke)
                    hit = torch.gather(cand, 1, order[:, :ke]) & (torch.arange(ke)[None, :] < kq[:, None])
                    acc[f"recall@{kk}"][i].append(hit.sum(1).double() / kq.clamp_min(1).double())
                if Ts:
                    s_c = torch.where(cand, s, torch.full_like(s, -math.inf))
                    best = s_c.amax(1, keepdim=True)
                    for T in Ts:
                        acc[f"n_survivors@{T:g}"][i].append((cand & (s_c >= best - T)).sum(1))
    outd = {"settings": np.asarray(settings, dtype=float), "n_allowed": torch.cat(acc.pop("n_allowed")).numpy()}
    for name, per in acc.items():
        outd[name] = np.stack([torch.cat(x).numpy() for x in per])
    return outd


# ============================================================================ AttnFn for real models
@dataclass
class A3Stats:
    """Counts accumulated by `a3_attn_fn` over every call (queries with at least one allowed key)."""

    queries: int = 0
    allowed: float = 0.0
    iterations: float = 0.0
    candidates: float = 0.0
    survivors: float = 0.0
    per_layer: dict = field(default_factory=dict)

    def add(self, layer, res: A3Result):
        live = res.n_allowed > 0
        n = int(live.sum())
        vals = dict(queries=n, allowed=float(res.n_allowed[live].sum()), iterations=float(res.m[live].sum()),
                    candidates=float(res.n_candidates[live].sum()), survivors=float(res.n_survivors[live].sum()))
        for key, val in vals.items():
            setattr(self, key, getattr(self, key) + val)
            lay = self.per_layer.setdefault(layer, dict.fromkeys(vals, 0.0))
            lay[key] += val

    def mean(self, key: str) -> float:
        return getattr(self, key) / max(self.queries, 1)


def a3_attn_fn(*, M: int | None = None, m_frac: float | None = None, T: float = math.inf,
               score_floor: float = 0.0, stats: A3Stats | None = None):
    """An AttnFn (q, k, v, mask, scale, layer) -> out running A3 in place of exact attention.

    q (B, H, Tq, d), k/v (B, H, Tk, d) torch; mask additive float (0 allowed, -inf / very negative
    forbidden) broadcastable to (B, 1|H, Tq, Tk), or None. A causal decoder's mask makes each query
    search only its allowed keys (and with ``m_frac`` its budget scales with them)."""
    if (M is None) == (m_frac is None):
        raise ValueError("give exactly one of M or m_frac")

    def fn(q, k, v, mask, scale, layer=None):
        with torch.no_grad():
            res = a3_attention(q.detach().float(), k.detach().float(), v.detach().float(), M=M, m_frac=m_frac,
                               T=T, scale=scale, mask=None if mask is None else mask.detach().float(),
                               score_floor=score_floor)
        if stats is not None:
            stats.add(layer, res)
        return res.out.to(q.dtype)

    fn.a3_params = dict(M=M, m_frac=m_frac, T=T, score_floor=score_floor)
    return fn


# ============================================================================ pipeline model
#: Constants of the A3 hardware model that are not in the shared energy table: value, unit, source.
HW_CONSTANTS = {
    "clock_hz": (1e9, "Hz", "paper card: about 1 GHz [unconfirmed] -> ASSUMPTION 1 GHz"),
    "node_nm": (40, "nm", "paper card: 40 nm test chip [secondary]"),
    "n_keys": (320, "keys", "paper card: key SRAM sized for n = 320 [secondary]"),
    "d": (64, "elements", "paper card: d = 64 [secondary]"),
    "bits": (8, "bit", "paper card: fixed point, likely 8-bit keys/values [unconfirmed] -> ASSUMPTION 8"),
    "score_bits": (16, "bit", "ASSUMPTION: greedy partial scores held as 16-bit fixed point"),
    "rows_per_cycle": (1, "row/cycle", "ASSUMPTION (paper card, base pipeline): dot-product and output "
                       "modules have d multipliers and handle one key/value row per cycle; exponent module one "
                       "score per cycle"),
    "select_iter_per_cycle": (1, "iter/cycle", "ASSUMPTION: one greedy iteration (one max and one min pick, "
                              "comparator trees over the d pointer heads in parallel) per cycle"),
    "sort_amortised": (True, "-", "ASSUMPTION: key sorting (d columns of n, one merge-sort comparator per column, "
                       "n*log2(n) cycles per key matrix) is amortised over the n queries that share K: "
                       "log2(n) cycles and d*log2(n) compares per query, off the critical path"),
    "pipeline_fill": (8, "cycles", "ASSUMPTION: adder-tree depth log2(d)=6 + 2 register stages per module "
                      "added to latency only"),
    "exp_pj": ("fp32_exp", "table", "ASSUMPTION: exp unit energy = shared table's fp32 exp (A3 uses a "
               "fixed-point LUT exp, so this is an upper bound)"),
    "compare_pj": ("int32_add", "table", "ASSUMPTION: a comparator costs one 32-bit add (upper bound for "
                   "16-bit compares)"),
    "static_w": (0.0, "W", "ASSUMPTION: dynamic energy only (leakage not modelled); swept in the notebook"),
}


@dataclass(frozen=True)
class A3Hardware:
    """Stated configuration of the A3 chip model (see HW_CONSTANTS for sources)."""

    clock_hz: float = 1e9
    node_nm: float = 40
    d: int = 64
    n_max: int = 320
    bits: int = 8
    score_bits: int = 16
    pipeline_fill: int = 8
    sort_amortised: bool = True
    static_w: float = 0.0
    alpha: float = 1.0  # node scaling exponent of the shared table

    def __post_init__(self):
        for name in ("clock_hz", "node_nm", "d", "n_max", "bits", "score_bits"):
            if not getattr(self, name) > 0:
                raise ValueError(f"A3Hardware.{name} must be positive, got {getattr(self, name)}")

    # per-action energies (pJ) at this node from the shared table
    def e(self) -> dict:
        node, a = self.node_nm, self.alpha
        kv_bytes = self.n_max * self.d * self.bits / 8
        idx_bits = max(1, math.ceil(math.log2(self.n_max)))
        sorted_bytes = self.n_max * self.d * (self.bits + idx_bits) / 8
        return dict(
            mac=mac_energy_pj(self.bits, node, alpha=a),
            mult=energy_pj("int8_mult", node, alpha=a) * (self.bits / 8) ** 2,
            add=energy_pj("int32_add", node, alpha=a),
            cmp=energy_pj("int32_add", node, alpha=a),
            exp=energy_pj("fp32_exp", node, alpha=a),
            fmul=energy_pj("fp32_mult", node, alpha=a),
            sram_kv_bit=sram_energy_pj_per_bit(kv_bytes, node, alpha=a),
            sram_sorted_bit=sram_energy_pj_per_bit(sorted_bytes, node, alpha=a),
            rf_bit=energy_pj("register_file", node, alpha=a),
            idx_bits=idx_bits,
            kv_bytes=kv_bytes,
            sorted_bytes=sorted_bytes,
        )


@dataclass(frozen=True)
class ModuleCost:
    name: str
    cycles: float
    energy_pj: float


@dataclass(frozen=True)
class PipelineCost:
    """Cycles and energy of one query through a pipeline of modules."""

    kind: str
    modules: tuple
    clock_hz: float
    pipeline_fill: int
    static_w: float = 0.0

    @property
    def interval_cycles(self) -> float:
        """Cycles between queries when the modules work on successive queries (the slowest module)."""
        return max(m.cycles for m in self.modules)

    @property
    def latency_cycles(self) -> float:
        return sum(m.cycles for m in self.modules) + self.pipeline_fill * len(self.modules)

    @property
    def throughput_qps(self) -> float:
        return self.clock_hz / self.interval_cycles

    @property
    def latency_s(self) -> float:
        return self.latency_cycles / self.clock_hz

    @property
    def dynamic_energy_pj(self) -> float:
        return sum(m.energy_pj for m in self.modules)

    @property
    def energy_pj(self) -> float:
        """Energy per query: dynamic + static power over the query interval."""
        return self.dynamic_energy_pj + self.static_w * self.interval_cycles / self.clock_hz * 1e12

    def table(self) -> list[dict]:
        return [dict(module=m.name, cycles=m.cycles, time_ns=m.cycles / self.clock_hz * 1e9,
                     energy_pj=m.energy_pj) for m in self.modules]


def _check_counts(**kw):
    for name, val in kw.items():
        if not (val >= 0 and math.isfinite(val)):
            raise ValueError(f"{name} must be a finite number >= 0, got {val}")


def _dot_module(hw, e, rows, d):
    # per row: d multiply-accumulates (adder tree) + read one key row (d x bits) from the key SRAM
    return ModuleCost("dot-product", rows, rows * (d * e["mac"] + d * hw.bits * e["sram_kv_bit"] + e["cmp"]))


def _exp_module(hw, e, scored, exps):
    # per scored row: subtract max + threshold compare; per kept row: exp + add to the running sum
    return ModuleCost("exponent", scored, scored * (e["add"] + e["cmp"]) + exps * (e["exp"] + e["add"]))


def _out_module(hw, e, rows, dv):
    # per kept row: dv MACs p_i * v_i + read one value row; then dv multiplies by 1/sum (+ one reciprocal)
    return ModuleCost("output", rows, rows * (dv * e["mac"] + dv * hw.bits * e["sram_kv_bit"])
                      + dv * e["fmul"] + e["exp"])


def base_pipeline(n: float, d: int | None = None, hw: A3Hardware | None = None) -> PipelineCost:
    """Base (exact) A3 for one query over n keys: dot-product, exponent and output modules, n rows each."""
    hw = hw or A3Hardware()
    d = hw.d if d is None else d
    _check_counts(n=n, d=d)
    if n < 1:
        raise ValueError(f"n must be >= 1 key, got {n}")
    e = hw.e()
    mods = (_dot_module(hw, e, n, d), _exp_module(hw, e, n, n), _out_module(hw, e, n, d))
    return PipelineCost("base", mods, hw.clock_hz, hw.pipeline_fill, hw.static_w)


def approx_pipeline(n: float, M: float, candidates: float, survivors: float, d: int | None = None,
                    hw: A3Hardware | None = None, *, max_picks: float | None = None,
                    min_picks: float | None = None) -> PipelineCost:
    """Approximate A3 for one query: candidate selection (M iterations), then dot products for the
    candidates, exponent over candidates (threshold) and output over survivors.

    ``M`` iterations granted (cycles of the selection module); ``max_picks`` / ``min_picks`` the
    iterations that actually took a product on each side (default M; energy only)."""
    hw = hw or A3Hardware()
    d = hw.d if d is None else d
    _check_counts(n=n, M=M, candidates=candidates, survivors=survivors)
    if n < 1 or M <= 0:
        raise ValueError(f"need n >= 1 and M > 0, got n={n}, M={M}")
    if not survivors <= candidates <= n:
        raise ValueError(f"need survivors <= candidates <= n, got {survivors}, {candidates}, {n}")
    e = hw.e()
    hi = M if max_picks is None else max_picks
    lo = M if min_picks is None else min_picks
    log_n = math.log2(max(n, 2))
    # per pick: one new product (multiply for the advanced pointer's next head), a (d-1)-compare tree,
    # one add into the row's partial score (RF read+write), one sorted-SRAM entry read (value + row index)
    per_pick = (e["mult"] + (d - 1) * e["cmp"] + e["add"] + 2 * hw.score_bits * e["rf_bit"]
                + (hw.bits + e["idx_bits"]) * e["sram_sorted_bit"])
    setup = 2 * d * (e["mult"] + (hw.bits + e["idx_bits"]) * e["sram_sorted_bit"])  # first heads
    readout = n * hw.score_bits * e["rf_bit"] + n * e["cmp"]  # sign check of every partial score
    sort = d * log_n * (e["cmp"] + 2 * (hw.bits + e["idx_bits"]) * e["sram_sorted_bit"]) if hw.sort_amortised else 0.0
    sel_cycles = M + (log_n if hw.sort_amortised else 0.0)
    mods = (ModuleCost("candidate selection", sel_cycles, (hi + lo) * per_pick + setup + readout + sort),
            _dot_module(hw, e, candidates, d), _exp_module(hw, e, candidates, survivors),
            _out_module(hw, e, survivors, d))
    return PipelineCost("approximate", mods, hw.clock_hz, hw.pipeline_fill, hw.static_w)


# ============================================================================ CPU baseline (measured)
def cpu_exact_single(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Exact attention for ONE query (d,) in numpy: the kernel timed as the one-query-at-a-time CPU."""
    s = (k @ q) * scale
    e = np.exp(s - s.max())
    return (e / e.sum()) @ v


def cpu_exact_batched(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Exact attention for a batch of queries (Q, d) against one key matrix in numpy."""
    s = (q @ k.T) * scale
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)) @ v


@dataclass(frozen=True)
class CpuTiming:
    n: int
    d: int
    single_s: float    # seconds per query, one query at a time (best of repeats)
    batched_s: float   # seconds per query, all queries of one key matrix at once
    repeats: int
    threads: int


def measure_cpu(n: int = 320, d: int = 64, *, n_queries: int = 320, repeats: int = 5, seed: int = 0,
                q=None, k=None, v=None, torch_threads: int | None = None) -> CpuTiming:
    """MEASURE exact attention on this machine's CPU (float32 numpy): per query one at a time and
    batched. Real tensors may be given (q (Q, d), k (n, d), v (n, d)); otherwise Gaussian ones of the
    same shape are used (timing does not depend on the values). Best (minimum) of ``repeats``, the
    usual micro-benchmark convention: other processes on a shared machine only ever add time."""
    if n < 1 or d < 1 or n_queries < 1 or repeats < 1:
        raise ValueError("n, d, n_queries and repeats must be >= 1")
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_queries, d)).astype(np.float32) if q is None else np.asarray(q, np.float32)
    k = rng.standard_normal((n, d)).astype(np.float32) if k is None else np.asarray(k, np.float32)
    v = rng.standard_normal((n, d)).astype(np.float32) if v is None else np.asarray(v, np.float32)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query width {q.shape[-1]} != key width {k.shape[-1]}")
    scale = 1.0 / math.sqrt(q.shape[-1])
    from threadpoolctl import threadpool_limits

    singles, batches = [], []
    # BLAS with its default threads and with one thread (on a loaded 2-core machine one thread is often
    # faster); the best of both is the CPU baseline
    for limit in (None, 1):
        with threadpool_limits(limits=limit):
            cpu_exact_batched(q, k, v, scale)  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i in range(q.shape[0]):
                    cpu_exact_single(q[i], k, v, scale)
                singles.append((time.perf_counter() - t0) / q.shape[0])
                t0 = time.perf_counter()
                cpu_exact_batched(q, k, v, scale)
                batches.append((time.perf_counter() - t0) / q.shape[0])
    return CpuTiming(k.shape[0], q.shape[-1], float(np.min(singles)), float(np.min(batches)), repeats,
                     torch.get_num_threads())


# ============================================================================ a stream of real queries
def stream_costs(n_allowed, m, candidates, survivors, *, d: int | None = None, hw: A3Hardware | None = None,
                 max_picks=None, min_picks=None) -> dict:
    """Base vs approximate A3 over a stream of queries with per-query counts (arrays of equal length,
    e.g. from `candidate_sweep` on captured attention). The queries follow each other through the
    pipeline, so a stream's time is the sum of its per-query intervals.

    Returns: queries; throughput_speedup = sum(base intervals) / sum(approx intervals);
    latency_speedup = mean base latency / mean approx latency; base / approx: mean cycles per query
    (interval, latency), mean energy per query (pJ) and per module [(name, mean cycles, mean pJ)]."""
    hw = hw or A3Hardware()
    arrs = [np.asarray(x, dtype=float).reshape(-1) for x in (n_allowed, m, candidates, survivors)]
    if len({a.size for a in arrs}) != 1 or arrs[0].size == 0:
        raise ValueError("n_allowed, m, candidates and survivors must be non-empty arrays of equal length")
    n_a, m_a, c_a, s_a = arrs
    hi = m_a if max_picks is None else np.asarray(max_picks, float).reshape(-1)
    lo = m_a if min_picks is None else np.asarray(min_picks, float).reshape(-1)
    out = {"queries": int(n_a.size)}
    acc = {"base": [], "approx": []}
    for i in range(n_a.size):
        acc["base"].append(base_pipeline(n_a[i], d, hw))
        acc["approx"].append(approx_pipeline(n_a[i], m_a[i], c_a[i], s_a[i], d, hw, max_picks=hi[i], min_picks=lo[i]))
    for kind, pipes in acc.items():
        names = [mod.name for mod in pipes[0].modules]
        out[kind] = dict(
            interval_cycles=float(np.mean([p.interval_cycles for p in pipes])),
            latency_cycles=float(np.mean([p.latency_cycles for p in pipes])),
            energy_pj=float(np.mean([p.energy_pj for p in pipes])),
            throughput_qps=hw.clock_hz / float(np.mean([p.interval_cycles for p in pipes])),
            modules=[(nm, float(np.mean([p.modules[j].cycles for p in pipes])),
                      float(np.mean([p.modules[j].energy_pj for p in pipes]))) for j, nm in enumerate(names)])
    out["throughput_speedup"] = out["base"]["interval_cycles"] / out["approx"]["interval_cycles"]
    out["latency_speedup"] = out["base"]["latency_cycles"] / out["approx"]["latency_cycles"]
    out["energy_saving"] = out["base"]["energy_pj"] / out["approx"]["energy_pj"]
    return out


def smallest_setting(settings, metric, target: float):
    """Smallest setting whose metric >= target (the conservative rule); None if none reaches it."""
    for s, val in sorted(zip(settings, metric)):
        if val >= target:
            return s
    return None
