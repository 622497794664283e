"""SPRINT's on-chip K/V buffer: how many K/V rows each head fetches from main memory, simulated on the
recorded keep masks (which keys each query kept) under a replacement policy.

The buffer holds ``capacity`` K/V rows. Queries are processed one after another; query i needs its
survivors. A survivor already resident is a hit (no fetch); a missing one is fetched (one K/V row from
main memory). After query i the buffer retains at most ``capacity`` rows, chosen from the rows it held
and the rows query i used, by the policy:

- ``"previous"``: only query i's survivors (the adjacent-query reuse alone: query i+1 reuses what query
  i kept; rows of earlier queries are dropped). An upper bound for any policy that prefers recent rows.
- ``"lru"``: least recently used replacement -- rows stay resident across queries until evicted, and the
  previous query's survivors are the last to go (adjacent-query reuse on top). SPRINT's buffer here.
- ``"belady"``: retain the rows needed again soonest (Belady's MIN with look-ahead, optimal replacement):
  a lower bound on the fetches of any policy, not implementable in hardware.

When query i keeps more rows than fit, "previous" and LRU retain the same ``capacity`` of them (lowest
key index first), so LRU always holds a superset of what "previous" holds and never fetches more.
All policies are vectorised over the (sequence, head) units: one numpy step per query.

**SPRINT with query tiling** (an extension, `tiled_fetches` / `QueryTiledFetch`): like the query-tiled
baseline, the buffer holds a tile of ``bq`` query (and output) rows and the K/V rows stream through it;
each K/V row kept by ANY query of the tile is fetched once for the whole tile (the union of the tile's
survivors), and rows are not kept across tiles (conservative).
"""
from __future__ import annotations

import hashlib
import inspect

import numpy as np

from .algorithm import RowStats

__all__ = ["POLICIES", "simulate_fetches", "BufferPolicy", "tiled_fetches", "QueryTiledFetch"]

POLICIES = ("previous", "lru", "belady")


def _next_use(keep: np.ndarray) -> np.ndarray:
    """next[u, i, j]: the first query after i that keeps key j (T = never), int32 (U, T, Tk)."""
    U, T, Tk = keep.shape
    out = np.empty((U, T, Tk), dtype=np.int32)
    nxt = np.full((U, Tk), T, dtype=np.int32)
    for i in range(T - 1, -1, -1):
        out[:, i] = nxt
        nxt = np.where(keep[:, i], i, nxt)
    return out


def simulate_fetches(keep: np.ndarray, capacity: int, policy: str = "lru", valid: np.ndarray | None = None) -> np.ndarray:
    """K/V rows fetched per unit for keep masks ``keep`` bool (U, T, Tk) through a buffer of ``capacity``
    rows under ``policy`` (see the module docstring). ``valid`` (U, T): real query rows (padding rows
    need nothing). Returns float64 (U,)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown buffer policy {policy!r}; known: {', '.join(POLICIES)}")
    keep = np.asarray(keep, dtype=bool)
    if keep.ndim != 3:
        raise ValueError(f"keep masks must be (units, queries, keys), got shape {keep.shape}")
    if int(capacity) != capacity or capacity < 0:
        raise ValueError(f"capacity must be a non-negative integer number of rows, got {capacity}")
    capacity = int(capacity)
    if valid is not None:
        keep = keep & np.asarray(valid, dtype=bool)[..., None]
    U, T, Tk = keep.shape
    fetched = np.zeros(U)
    resident = np.zeros((U, Tk), dtype=bool)
    last = np.full((U, Tk), -1, dtype=np.int64)
    nxt = _next_use(keep) if policy == "belady" else None
    order = np.arange(Tk)
    for i in range(T):
        need = keep[:, i]
        fetched += (need & ~resident).sum(1)
        if capacity == 0:
            continue
        last[need] = i
        cand = resident | need
        if policy == "previous":
            cand = need
            score = np.where(need, 1, 0).astype(np.int64)
        elif policy == "lru":
            score = last.copy()
        else:  # belady: current survivors and residents, soonest next use first
            score = -nxt[:, i].astype(np.int64)
        over = cand.sum(1) > capacity
        resident = cand
        if over.any():
            # top-`capacity` candidates by score, ties by lowest key index (a stable sort of -score)
            key = np.where(cand[over], -score[over], 1 << 40) * (Tk + 1) + order
            keep_idx = np.argsort(key, axis=1, kind="stable")[:, :capacity]
            sel = np.zeros((int(over.sum()), Tk), dtype=bool)
            np.put_along_axis(sel, keep_idx, True, axis=1)
            resident = resident.copy()
            resident[over] = sel
    return fetched


class BufferPolicy:
    """``fetched_of`` for `sprint_cost`: fetched K/V rows (N, H) of one layer's `RowStats` (recorded
    with ``record_masks=True``) through a buffer of ``capacity_rows`` under ``policy``; results are
    memoised per (layer statistics, capacity) and cached on disk by the masks' digest (``use_cache``)."""

    def __init__(self, policy: str = "lru", *, use_cache: bool = True):
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r}; known: {', '.join(POLICIES)}")
        self.policy = policy
        self.use_cache = use_cache
        self._memo: dict = {}

    def __call__(self, st: RowStats, capacity_rows: float) -> np.ndarray:
        key = (id(st), int(capacity_rows))
        if key not in self._memo:
            if st.keep_bits is None:
                st.keep_masks()                           # raises the clear error
            N, H = st.kept.shape[:2]

            def compute():
                masks = st.keep_masks()                   # (N, H, T, Tk)
                T, Tk = masks.shape[2:]
                return simulate_fetches(masks.reshape(N * H, T, Tk), int(capacity_rows), self.policy,
                                        st.valid.reshape(N * H, T)).reshape(N, H)

            if self.use_cache:
                from ..cache import cached

                h = hashlib.sha256(np.ascontiguousarray(st.keep_bits).tobytes())
                h.update(np.ascontiguousarray(st.valid).tobytes())
                disk_key = dict(masks=h.hexdigest()[:24], shape=list(st.keep_bits.shape), capacity=int(capacity_rows),
                                policy=self.policy, code=hashlib.sha256(inspect.getsource(simulate_fetches).encode()).hexdigest()[:16])
                f = cached("sprint", "buffer", disk_key, compute)
            else:
                f = compute()
            self._memo[key] = (st, np.asarray(f, dtype=np.float64))   # keep st alive so id() stays unique
        return self._memo[key][1]

    def __repr__(self) -> str:
        return f"BufferPolicy({self.policy!r})"


def tiled_fetches(keep: np.ndarray, tile: int, valid: np.ndarray | None = None) -> np.ndarray:
    """K/V rows fetched per unit when queries are processed in tiles of ``tile`` consecutive queries and
    each tile fetches the union of its queries' survivors once: keep bool (U, T, Tk) -> float64 (U,).
    tile = 1: every survivor of every query; tile >= T: each distinct survivor once."""
    keep = np.asarray(keep, dtype=bool)
    if keep.ndim != 3:
        raise ValueError(f"keep masks must be (units, queries, keys), got shape {keep.shape}")
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer number of queries, got {tile}")
    if valid is not None:
        keep = keep & np.asarray(valid, dtype=bool)[..., None]
    U, T, Tk = keep.shape
    tile = min(int(tile), T)
    n_tiles = -(-T // tile)
    pad = n_tiles * tile - T
    if pad:
        keep = np.concatenate([keep, np.zeros((U, pad, Tk), dtype=bool)], axis=1)
    return keep.reshape(U, n_tiles, tile, Tk).any(2).sum((1, 2)).astype(np.float64)


class QueryTiledFetch:
    """``fetched_of`` for `sprint_cost`: SPRINT with query tiling. The buffer left after one query and one
    output row holds ``capacity_rows`` K/V rows; a tile of bq queries needs bq - 1 more (Q, O) row pairs
    (one pair is as large as one K/V row) and at least one K/V staging row, so bq <= capacity_rows. The
    tile is the largest power of two that fits (or ``tile`` if given); fetches by `tiled_fetches`."""

    def __init__(self, tile: int | None = None):
        if tile is not None and (int(tile) != tile or tile < 1):
            raise ValueError(f"tile must be a positive integer or None, got {tile}")
        self.tile = tile
        self.last_tile: int | None = None

    def tile_for(self, capacity_rows: float) -> int:
        if self.tile is not None:
            if self.tile > max(1, int(capacity_rows)):
                raise ValueError(f"a tile of {self.tile} queries does not fit a buffer of {int(capacity_rows)} rows")
            return int(self.tile)
        return 1 << max(0, int(np.floor(np.log2(max(1.0, float(capacity_rows))))))

    def __call__(self, st: RowStats, capacity_rows: float) -> np.ndarray:
        N, H = st.kept.shape[:2]
        masks = st.keep_masks()
        T, Tk = masks.shape[2:]
        bq = self.tile_for(capacity_rows)
        self.last_tile = bq
        return tiled_fetches(masks.reshape(N * H, T, Tk), bq, st.valid.reshape(N * H, T)).reshape(N, H)

    def __repr__(self) -> str:
        return f"QueryTiledFetch({self.tile!r})"
