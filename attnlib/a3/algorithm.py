"""A3 algorithm (Ham et al., HPCA 2020, arXiv 2002.10941): approximate attention by greedy candidate search.

The algorithm (paper card: docs/papers/a3.md; details marked [unconfirmed] there are stated
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
   negative ones: that is what the vectorised implementation computes (``topk`` for the M-th value).
   Ties (equal products, e.g. quantised keys) are broken as the comparator tree does: the lower
   column index first, and within a column in the pointer's order over the stably sorted column.
3. Post-scoring: exact (scaled) scores for candidates only; keep those within ``T`` (in logit units)
   of the largest candidate score, i.e. whose softmax weight is at least exp(-T) of the largest one;
   softmax and the weighted sum of values over the survivors only. The paper states T as a threshold
   on a weight (lower T = more conservative); `margin_from_weight` converts: T_logit = -ln(T_weight).

Two implementations:
- `a3_single_query_reference`: a plain step-by-step version for one query with explicit sorted
  columns, pointers and heaps (for a student; slow).
- `a3_attention`: vectorised over any leading dims and queries (torch), same results (ties included).
`a3_attn_fn` wraps the vectorised version in the AttnFn signature of attnlib.models so the real
encoder/decoder run with A3 attention in every layer.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..threads import torch_threads

__all__ = [
    "SortedKeys", "preprocess_keys", "a3_single_query_reference", "A3Result", "a3_attention",
    "resolve_m", "candidate_sweep", "A3Stats", "a3_attn_fn", "mask_to_allowed", "margin_from_weight",
    "weight_from_margin",
]

#: Version of the algorithm's numerics: part of the cache key of every cached A3 result.
ALGORITHM_VERSION = "a3-2"


def margin_from_weight(t_weight: float) -> float:
    """The paper's threshold T as a weight in (0, 1] (keep a candidate while exp(s - s_max) >= T)
    converted to the logit margin `a3_attention` takes: -ln(T). T = 0 keeps everything (margin inf)."""
    t = float(t_weight)
    if not 0 <= t <= 1 or math.isnan(t):
        raise ValueError(f"the weight threshold T must lie in [0, 1] (lower = more conservative), got {t_weight}")
    return math.inf if t == 0 else -math.log(t)


def weight_from_margin(margin: float) -> float:
    """Inverse of `margin_from_weight`: exp(-margin)."""
    if not margin >= 0:
        raise ValueError(f"a logit margin must be >= 0, got {margin}")
    return math.exp(-margin)


# ============================================================================ threads
#: Torch threads used inside the A3 simulation (None keeps torch's setting). The work is many small
#: per-head blocks: on a shared, loaded 2-core machine one thread ran ~5-10x faster than two OpenMP
#: threads; on an idle one, with blocks of 4M products, one thread was as fast as two (measured here).
SIM_THREADS: int | None = 1


def _with_threads(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(SIM_THREADS):
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


def _tie_order(qpos: torch.Tensor, n: int, d: int, largest: bool) -> torch.Tensor:
    """Order key (r, n*d) of every product among equal ones, as the comparator tree picks them: the
    lower column j first, then the pointer's order in the stably sorted column. Max side: a column with
    q_j > 0 is walked from its largest key down, so equal keys come in DEcreasing row order; with
    q_j < 0 in increasing row order. Min side: the reverse."""
    i = torch.arange(n, device=qpos.device).repeat_interleave(d)          # row of flat index i*d + j
    j = torch.arange(d, device=qpos.device).repeat(n)                      # column
    down = qpos[:, j] if largest else ~qpos[:, j]                          # rows visited high -> low
    within = torch.where(down, (n - 1 - i)[None, :], i[None, :])
    return j[None, :] * n + within


def _take_side(P: torch.Tensor, vm: torch.Tensor, m_rows: torch.Tensor, qpos: torch.Tensor, d: int,
               largest: bool) -> torch.Tensor:
    """Bool (r, n*d): the products the greedy search takes on one side in m_rows iterations, given
    vm (r, 1), the m-th largest (smallest) product. Products strictly beyond vm (and of the right
    sign) are taken; of the products equal to vm, as many as iterations remain, in `_tie_order`."""
    sided = P > 0 if largest else P < 0
    take = (P > vm if largest else P < vm) & sided
    tie = (P == vm) & sided
    need = m_rows - take.sum(1)
    n_tie = tie.sum(1)
    take |= tie & (need >= n_tie)[:, None]
    split = ((need > 0) & (need < n_tie)).nonzero().flatten()
    if split.numel():                   # a tie straddles the M-th pick: take the first `need` in tie order
        r, nd = P.shape
        key = _tie_order(qpos[split], nd // d, d, largest)
        key = torch.where(tie[split], key, torch.full_like(key, nd * d + 1))
        kth = torch.sort(key, dim=1).values.gather(1, (need[split] - 1)[:, None])
        take[split] |= tie[split] & (key <= kth)
    return take


def _side_values(P: torch.Tensor, kk: int, largest: bool):
    """The kk largest (smallest) values of each row of P, sorted, and their flat indices."""
    return torch.topk(P, kk, dim=1, largest=largest, sorted=True)


def _side_partial(P, vals, idx, m_rows, qpos, d, largest, nd=None):
    """One side's contribution to the partial scores (r, n) and its picks (r,) after m_rows
    iterations, from the sorted values/indices of `_side_values` (kk >= max m + 1 where possible).
    Rows whose m-th and (m+1)-th values tie (the set of picks depends on the tie order) are redone
    with `_take_side`; elsewhere the first m sorted values are the picks whatever the tie order.
    ``P`` is the (r, n*d) product tensor, or a callable rows -> P[rows] (then ``nd`` = n*d) so that
    the sorted-column path builds full products only for the rare rows with a straddling tie."""
    r, kk = vals.shape
    nd = P.shape[1] if nd is None else nd
    sided = vals > 0 if largest else vals < 0
    take = (torch.arange(kk, device=vals.device)[None, :] < m_rows[:, None]) & sided
    partial = torch.zeros(r, nd // d, dtype=vals.dtype, device=vals.device)
    partial.scatter_add_(1, torch.div(idx, d, rounding_mode="floor"), torch.where(take, vals, torch.zeros_like(vals)))
    picks = take.sum(1)
    last = (m_rows - 1).clamp(max=kk - 1)[:, None]
    nxt = m_rows.clamp(max=kk - 1)[:, None]
    vm = vals.gather(1, last)
    split = ((m_rows < kk) & (vm == vals.gather(1, nxt))[:, 0] & sided.gather(1, last)[:, 0]).nonzero().flatten()
    if split.numel():
        Ps = P(split) if callable(P) else P[split]
        t = _take_side(Ps, vm[split], m_rows[split], qpos[split], d, largest)
        partial[split] = (Ps * t).reshape(len(split), nd // d, d).sum(-1)
        picks[split] = t.sum(1)
    return partial, picks


def _greedy_from_values(P, hi_vi, lo_vi, m_rows, qpos, d, nd=None):
    """Partial scores (r, n) and picks per side after m_rows iterations, from `_side_values` results."""
    p_hi, n_hi = _side_partial(P, *hi_vi, m_rows, qpos, d, True, nd)
    p_lo, n_lo = _side_partial(P, *lo_vi, m_rows, qpos, d, False, nd)
    return p_hi + p_lo, n_hi, n_lo


def _greedy_partial(P: torch.Tensor, allowed: torch.Tensor, m_rows: torch.Tensor, d: int, qpos: torch.Tensor):
    """Greedy partial scores of each row of P (r, n*d products, forbidden ones zero) after m_rows
    iterations; qpos (r, d) = q_j > 0. Returns partial (r, n), max_picks (r,), min_picks (r,)."""
    kk = int(min(int(m_rows.max()) + 1, P.shape[1]))
    return _greedy_from_values(P, _side_values(P, kk, True), _side_values(P, kk, False), m_rows, qpos, d)


def _sorted_side_values(qb: torch.Tensor, ks: tuple, kk: int, largest: bool):
    """`_side_values` from the SORTED COLUMNS of the keys (A3's preprocessing) instead of all n*d
    products: the kk largest products over all (i, j) lie among the kk largest of each column, and
    column j's largest products q_j*K[i, j] are its largest keys if q_j > 0, its smallest if q_j < 0.
    qb (g, tq, d); ks = (K sorted descending along keys (g, tk, d), their rows (g, tk, d)), forbidden
    keys zeroed before sorting. Returns values (g*tq, kk) sorted and flat indices row*d + j, as topk
    over the full products would (up to the order of equal values). Cost ~ kk*d per query, not n*d."""
    kd, rd = ks
    g, tk, d = kd.shape
    tq = qb.shape[1]
    kc = min(kk, tk)
    hi_k, hi_r = kd[:, :kc], rd[:, :kc]                               # largest keys per column
    lo_k, lo_r = kd.flip(1)[:, :kc], rd.flip(1)[:, :kc]               # smallest keys per column
    qpos = (qb > 0)[:, :, None, :]                                    # (g, tq, 1, d)
    use_hi = qpos if largest else ~qpos
    C = qb[:, :, None, :] * torch.where(use_hi, hi_k[:, None], lo_k[:, None])   # (g, tq, kc, d)
    vals, pos = torch.topk(C.reshape(g * tq, kc * d), kk, dim=1, largest=largest, sorted=True)
    pos = pos.reshape(g, tq, kk)
    r_hi = hi_r.reshape(g, 1, kc * d).expand(g, tq, kc * d).gather(2, pos)
    r_lo = lo_r.reshape(g, 1, kc * d).expand(g, tq, kc * d).gather(2, pos)
    j = pos % d
    uh = use_hi[:, :, 0, :].expand(g, tq, d).gather(2, j)
    rows = torch.where(uh, r_hi, r_lo)
    return vals, (rows * d + j).reshape(g * tq, kk)


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
                 return_sets: bool = False, max_elements: int = 1 << 22, sorted_path: bool = True) -> A3Result:
    """A3 attention, vectorised (torch; numpy inputs accepted) over leading dims and queries.

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv). ``M``: greedy iterations per query, or
    ``m_frac``: ceil(m_frac * allowed keys) iterations per query (each query of a causal decoder
    searches only its allowed keys). ``T``: post-scoring threshold in logit units (scaled scores).
    ``mask``: bool (True = allowed) or additive float (0 allowed, -inf / very negative forbidden; the
    finite part is added to the post-scoring logits), broadcastable to (..., Tq, Tk). ``score_floor``:
    rows whose greedy partial score exceeds it are candidates (paper: 0; -inf makes every allowed row
    a candidate). ``max_elements`` bounds the product tensor held at once (memory knob only).
    ``sorted_path``: where every query of a head sees the same keys (no causal mask) and M is small
    against n*d, find the greedy picks from the sorted key columns (cost ~ M*d per query, A3's own
    preprocessing) instead of all n*d products; same results (tested), only faster.
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
            alf = al.reshape(g * tq, tk)
            n_allowed = alf.sum(1)
            m_rows = resolve_m(n_allowed, M=M, m_frac=m_frac, d=d)
            qpos = (qb > 0).reshape(g * tq, d)
            kk = int(min(int(m_rows.max()) + 1, tk * d))
            if sorted_path and kk < tk and torch.equal(al[:, :1].expand_as(al), al):
                # every query of a head sees the same keys: search the sorted columns (A3's preprocessing)
                kz = kb * al[:, 0, :, None]                           # forbidden keys take no part
                ks = torch.sort(kz, dim=1, descending=True)
                rows_of = torch.arange(g, device=qb.device).repeat_interleave(tq)

                def P(rows, qb=qb, kz=kz, rows_of=rows_of):
                    return (qb.reshape(g * tq, d)[rows][:, None, :] * kz[rows_of[rows]]).reshape(len(rows), -1)

                hi_vi, lo_vi = _sorted_side_values(qb, ks, kk, True), _sorted_side_values(qb, ks, kk, False)
                partial, hi, lo = _greedy_from_values(P, hi_vi, lo_vi, m_rows, qpos, d, nd=tk * d)
            else:
                P = qb[:, :, None, :] * kb[:, None, :, :]            # (g, tq, Tk, d) component products
                if not bool(al.all()):
                    P.mul_(al[..., None])                             # forbidden keys take no part
                P = P.reshape(g * tq, tk * d)
                partial, hi, lo = _greedy_partial(P, alf, m_rows, d, qpos)
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
            kk = min(mmax + 1, per_query)
            hi_vi, lo_vi = _side_values(P, kk, True), _side_values(P, kk, False)
            qpos = (qb > 0).reshape(r, d)
            kmax = min(max(ks), Tk)
            order = torch.topk(s, kmax, dim=1).indices
            probs = torch.softmax(s, dim=1)  # exact attention weights (mask bias not included)
            acc["n_allowed"].append(n_allowed)
            for i, m in enumerate(ms):
                partial, n_hi, n_lo = _greedy_from_values(P, hi_vi, lo_vi, m, qpos, d)
                cand = _candidates(partial, al, score_floor) & al
                acc["m"][i].append(m)
                acc["max_picks"][i].append(n_hi)
                acc["min_picks"][i].append(n_lo)
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


