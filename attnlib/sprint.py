"""SPRINT (Yazdanbakhsh et al., MICRO 2022): in-memory pruning of attention keys + on-chip recomputation.

The method, in four steps (one query at a time):

1. **In-memory scoring.** Keys are kept, at reduced precision, in ReRAM crossbars. The query drives the
   crossbar and every bit line produces an approximate analog score q.k_j (`analog_scores`), with a
   stated noise model: key / query quantisation (limited precision), a relative conductance variation
   per cell (device variation) and additive bit-line read noise proportional to the full-scale signal.
2. **In-memory thresholding.** A comparator per bit line compares the analog score with the layer's
   threshold minus a safety margin: a 1-bit keep / prune decision (`prune_mask`). Thresholds are
   calibrated per layer on held-out text (`calibrate_thresholds`: the largest threshold that still keeps
   a target fraction of the exact attention mass); the margin is z times the measured standard deviation
   of the analog error on the same calibration text (`analog_error_std`).
3. **Fetch survivors only.** Only the keys/values that survive are moved to the small on-chip buffer;
   keys already fetched for the previous query are reused ("dynamic spatial locality", `fetch_rows`).
4. **Exact recomputation.** Scores of the survivors are recomputed exactly in digital, then softmax
   and the weighted sum of values over the survivors only (`sprint_attention`).

`SprintAttention` packages steps 1-4 as an attention function for `attnlib.models` (AttnFn contract) and
records, per layer, how many keys each query kept and how many it shared with the previous query.
`baseline_cost` / `sprint_cost` turn those real-model statistics into time and energy with the shared
`attnlib.hw` primitives plus the crossbar model `attnlib.hw.reram`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .hw import reram as rr
from .hw.accelerator import Accelerator

__all__ = [
    "AnalogConfig", "quantize_symmetric", "analog_scores", "allowed_from_mask", "prune_mask",
    "sprint_attention", "SprintAttention", "calibrate_thresholds", "analog_error_std", "RowStats",
    "fetch_rows", "baseline_cost", "sprint_cost", "CostBreakdown", "map_stats_to_shape",
]

#: An additive mask entry above this counts as "allowed" (HF uses -inf or the dtype's minimum).
ALLOWED_ABOVE = -1e4


# ----------------------------------------------------------------------------- step 1: analog scores
@dataclass(frozen=True)
class AnalogConfig:
    """The in-memory scoring model.

    key_bits: precision of the keys stored in the crossbar (ASSUMPTION 4, swept);
    query_bits: precision of the query applied through the DACs (ASSUMPTION 4, swept);
    sigma_device: relative std of each cell's conductance (device-to-device / programming variation),
        multiplicative on the stored key element (ASSUMPTION 5%, swept);
    sigma_read: additive read noise on each bit line, as a fraction of that query's full-scale signal
        sum_i |q_i| * max|k| (ASSUMPTION 0.5%, swept);
    seed: noise draws are deterministic in (seed, layer, call count).
    """

    key_bits: int = 4
    query_bits: int = 4
    sigma_device: float = 0.05
    sigma_read: float = 0.005
    seed: int = 0

    def __post_init__(self):
        for name in ("key_bits", "query_bits"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < 2):
                raise ValueError(f"{name} must be an integer >= 2 (or None for full precision), got {v}")
        if self.sigma_device < 0 or self.sigma_read < 0:
            raise ValueError("noise standard deviations must be >= 0")

    @property
    def noiseless(self) -> bool:
        return self.sigma_device == 0 and self.sigma_read == 0


def quantize_symmetric(x: torch.Tensor, bits: int | None, dims) -> torch.Tensor:
    """Symmetric uniform quantisation to ``bits`` bits (2^(bits-1)-1 positive levels), one scale per
    slice reduced over ``dims`` (max-abs). Returns the de-quantised tensor. ``bits=None``: unchanged."""
    if bits is None:
        return x
    levels = 2 ** (bits - 1) - 1
    amax = x.abs().amax(dim=dims, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    step = amax / levels
    return torch.round(x / step).clamp(-levels, levels) * step


def analog_scores(q: torch.Tensor, k: torch.Tensor, scale: float, cfg: AnalogConfig,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Approximate scaled scores (q.k_j * scale) as the crossbar + comparator front end sees them.

    q: (..., Tq, d), k: (..., Tk, d). Keys are quantised per head (one scale for the head's whole K,
    as programmed into one crossbar group), queries per row (the DAC range follows each query).
    """
    kq = quantize_symmetric(k.float(), cfg.key_bits, (-2, -1))
    qq = quantize_symmetric(q.float(), cfg.query_bits, (-1,))
    if cfg.sigma_device > 0:
        eps = torch.randn(kq.shape, generator=generator, dtype=kq.dtype)
        kq = kq * (1 + cfg.sigma_device * eps)
    s = qq @ kq.transpose(-1, -2)
    if cfg.sigma_read > 0:
        full_scale = qq.abs().sum(-1, keepdim=True) * k.float().abs().amax(dim=(-2, -1), keepdim=True)
        s = s + cfg.sigma_read * full_scale * torch.randn(s.shape, generator=generator, dtype=s.dtype)
    return s * scale


# ----------------------------------------------------------------------------- step 2: threshold
def allowed_from_mask(mask, shape) -> torch.Tensor:
    """Boolean (B, H, Tq, Tk) tensor of allowed positions from an additive float (or bool) mask."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    m = torch.as_tensor(mask)
    allowed = m if m.dtype == torch.bool else m > ALLOWED_ABOVE
    return allowed.expand(shape)


def prune_mask(analog: torch.Tensor, allowed: torch.Tensor, threshold: float, margin: float = 0.0) -> torch.Tensor:
    """Comparator decisions: keep key j for query i iff analog_ij >= threshold - margin (and allowed).

    A query row whose keys are all pruned keeps its single highest analog score (ASSUMPTION: a
    winner-take-all fallback, so no row is left without keys). ``threshold=-inf`` keeps everything.
    """
    keep = allowed & (analog >= (threshold - margin))
    empty = ~keep.any(-1, keepdim=True) & allowed.any(-1, keepdim=True)
    if bool(empty.any()):
        best = analog.masked_fill(~allowed, float("-inf")).argmax(-1, keepdim=True)
        fallback = torch.zeros_like(keep).scatter_(-1, best, True)
        keep = torch.where(empty, fallback, keep)
    return keep


# ----------------------------------------------------------------------------- step 4: exact recompute
def sprint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor, mask=None,
                     scale: float | None = None) -> torch.Tensor:
    """Exact softmax over the SURVIVING keys only, then the weighted sum of their values.

    Pruned keys get probability exactly 0, so neither their key nor their value influences the output.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None and torch.as_tensor(mask).dtype != torch.bool:
        s = s + torch.as_tensor(mask).to(s.dtype).clamp_min(-1e30)
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    denom = e.sum(-1, keepdim=True)
    p = torch.where(denom > 0, e / denom.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))
    # a pruned value must not leak even as 0 * inf / NaN: zero it where no survivor in the row uses it
    return p @ v.masked_fill(~keep.any(-2).unsqueeze(-1), 0.0)


# ----------------------------------------------------------------------------- statistics of real masks
@dataclass
class RowStats:
    """Per-query keep statistics of one layer, stacked over sequences: arrays (N, H, T).

    kept: survivors of query i; overlap: survivors shared with query i-1 (0 for i = 0);
    allowed: keys query i may see (T for an encoder, i+1 for a causal decoder); mass: exact attention
    probability mass of the survivors; valid: real (non-padding) query rows.
    """

    layer: int
    kept: np.ndarray
    overlap: np.ndarray
    allowed: np.ndarray
    mass: np.ndarray
    valid: np.ndarray
    union: np.ndarray | None = None  # (N, H): distinct keys kept by any query of the head

    @property
    def keep_fraction(self) -> float:
        v = self.valid
        return float(self.kept[v].sum() / max(1, self.allowed[v].sum()))

    @property
    def pruning_ratio(self) -> float:
        return 1.0 - self.keep_fraction

    @property
    def reuse_fraction(self) -> float:
        """Of query i+1's survivors, the fraction already fetched for query i (rows 1.. of each head)."""
        v = self.valid[..., 1:]
        return float(self.overlap[..., 1:][v].sum() / max(1, self.kept[..., 1:][v].sum()))

    @property
    def mean_mass(self) -> float:
        return float(self.mass[self.valid].mean())


def _row_stats(layer: int, keep: torch.Tensor, allowed: torch.Tensor, probs: torch.Tensor) -> RowStats:
    kept = keep.sum(-1)
    overlap = torch.zeros_like(kept)
    overlap[..., 1:] = (keep[..., 1:, :] & keep[..., :-1, :]).sum(-1)
    n_allowed = allowed.sum(-1)
    mass = (probs * keep).sum(-1)
    tq, tk = keep.shape[-2:]
    if tq == tk:  # self-attention: query i is real iff key i is allowed for it (padding rows are not)
        valid = torch.diagonal(allowed, dim1=-2, dim2=-1)
    else:
        valid = n_allowed > 0
    union = keep.any(-2).sum(-1)
    return RowStats(layer, kept.numpy().astype(np.int32), overlap.numpy().astype(np.int32),
                    n_allowed.numpy().astype(np.int32), mass.float().numpy(), valid.numpy(),
                    union.numpy().astype(np.int32))


def merge_stats(parts: list[RowStats]) -> RowStats:
    """Concatenate RowStats of the same layer along the sequence axis."""
    if not parts:
        raise ValueError("no statistics to merge")
    if any(p.layer != parts[0].layer for p in parts) or any(p.kept.shape[1:] != parts[0].kept.shape[1:] for p in parts):
        raise ValueError("can only merge stats of one layer with the same (H, T)")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts], axis=0)
    union = cat("union") if all(p.union is not None for p in parts) else None
    return RowStats(parts[0].layer, cat("kept"), cat("overlap"), cat("allowed"), cat("mass"), cat("valid"), union)


# ----------------------------------------------------------------------------- the attention function
class SprintAttention:
    """SPRINT attention as an `attnlib.models` AttnFn: ``fn(q, k, v, mask, scale, layer) -> out``.

    thresholds: per-layer thresholds on the SCALED score (q.k * scale), a sequence indexed by layer
    (-inf: no pruning in that layer); margins: per-layer safety margins (scalar or sequence) subtracted
    from the threshold; cfg: the analog front end. ``record=True`` keeps per-layer `RowStats` in
    ``self.stats[layer]`` (a list, one entry per call).
    """

    def __init__(self, thresholds, margins=0.0, cfg: AnalogConfig = AnalogConfig(), *, record: bool = False):
        self.thresholds = np.asarray(thresholds, dtype=float)
        m = np.asarray(margins, dtype=float)
        self.margins = np.broadcast_to(m, self.thresholds.shape).copy() if m.ndim == 0 else m
        if self.margins.shape != self.thresholds.shape:
            raise ValueError(f"margins {self.margins.shape} and thresholds {self.thresholds.shape} differ in shape")
        self.cfg = cfg
        self.record = record
        self.stats: dict[int, list[RowStats]] = {}
        self._calls: dict[int, int] = {}

    def _generator(self, layer: int) -> torch.Generator:
        n = self._calls.get(layer, 0)
        self._calls[layer] = n + 1
        return torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + layer * 10_007 + n)

    def keep_mask(self, q, k, mask, scale, layer):
        """(keep, allowed) boolean (B, H, Tq, Tk) for one layer's inputs."""
        if not 0 <= layer < len(self.thresholds):
            raise ValueError(f"no threshold for layer {layer} (have {len(self.thresholds)})")
        shape = (*q.shape[:-1], k.shape[-2])
        allowed = allowed_from_mask(mask, shape)
        thr = float(self.thresholds[layer])
        if thr == -math.inf:
            return allowed.clone(), allowed
        analog = analog_scores(q, k, scale, self.cfg, self._generator(layer))
        return prune_mask(analog, allowed, thr, float(self.margins[layer])), allowed

    def __call__(self, q, k, v, mask, scale, layer):
        dev = q.device
        qc, kc, vc = q.detach().float().cpu(), k.detach().float().cpu(), v.detach().float().cpu()
        mc = None if mask is None else mask.detach().cpu()
        keep, allowed = self.keep_mask(qc, kc, mc, scale, layer)
        out = sprint_attention(qc, kc, vc, keep, mc, scale)
        if self.record:
            s = (qc @ kc.transpose(-1, -2)) * scale
            probs = torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
            self.stats.setdefault(layer, []).append(_row_stats(layer, keep, allowed, probs))
        return out.to(device=dev, dtype=q.dtype)

    def pruned_fraction(self) -> float:
        """Fraction of allowed (query, key) pairs pruned over every recorded call and layer (works for
        calls of different lengths, unlike `merged_stats`)."""
        kept = sum(float(st.kept[st.valid].sum()) for sts in self.stats.values() for st in sts)
        allowed = sum(float(st.allowed[st.valid].sum()) for sts in self.stats.values() for st in sts)
        return 1.0 - kept / max(1.0, allowed)

    def merged_stats(self) -> list[RowStats]:
        """One merged `RowStats` per recorded layer, in layer order."""
        return [merge_stats(self.stats[l]) for l in sorted(self.stats)]


# ----------------------------------------------------------------------------- calibration
def _flat_scores(cap) -> tuple[np.ndarray, np.ndarray, float]:
    """Allowed (scaled exact score, exact probability) pairs of one LayerCapture, and its number of rows."""
    s = (cap.q.float() @ cap.k.float().transpose(-1, -2)) * cap.scale
    allowed = allowed_from_mask(cap.mask, s.shape)
    p = cap.probs.float()
    rows = float(p.sum())  # every real row sums to 1
    return s[allowed].numpy(), p[allowed].numpy(), rows


def calibrate_thresholds(captures: list, target_mass: float) -> np.ndarray:
    """Per-layer threshold: the LARGEST t such that keys with exact scaled score >= t keep at least
    ``target_mass`` of the exact attention mass, summed over all calibration rows of that layer.

    captures: a list over calibration batches of lists of `LayerCapture` (one per layer), or a single
    such list. Uses exact scores: thresholds are a property of the model on calibration text, not of
    the analog front end (the margin absorbs the analog error).
    """
    if not 0 < target_mass <= 1:
        raise ValueError(f"target_mass must lie in (0, 1], got {target_mass}")
    batches = captures if isinstance(captures[0], (list, tuple)) else [captures]
    n_layers = len(batches[0])
    out = np.empty(n_layers)
    for li in range(n_layers):
        ss, ps, rows = [], [], 0.0
        for b in batches:
            s, p, r = _flat_scores(b[li])
            ss.append(s)
            ps.append(p)
            rows += r
        s, p = np.concatenate(ss), np.concatenate(ps)
        if target_mass >= 1:
            out[li] = float(s.min())
            continue
        order = np.argsort(-s, kind="stable")
        cum = np.cumsum(p[order], dtype=np.float64)
        idx = int(np.searchsorted(cum, target_mass * cum[-1]))
        out[li] = float(s[order][min(idx, len(s) - 1)])
    return out


def analog_error_std(captures: list, cfg: AnalogConfig) -> np.ndarray:
    """Per-layer std of (analog - exact) scaled scores over allowed pairs of the calibration captures."""
    batches = captures if isinstance(captures[0], (list, tuple)) else [captures]
    n_layers = len(batches[0])
    out = np.empty(n_layers)
    for li in range(n_layers):
        sq, n = 0.0, 0
        for bi, b in enumerate(batches):
            cap = b[li]
            g = torch.Generator().manual_seed(int(cfg.seed) * 7919 + 101 * li + bi)
            exact = (cap.q.float() @ cap.k.float().transpose(-1, -2)) * cap.scale
            err = analog_scores(cap.q, cap.k, cap.scale, cfg, g) - exact
            allowed = allowed_from_mask(cap.mask, exact.shape)
            e = err[allowed].double()
            sq += float((e ** 2).sum())
            n += e.numel()
        out[li] = math.sqrt(sq / max(1, n))
    return out


# ----------------------------------------------------------------------------- data movement
def fetch_rows(kept: np.ndarray, overlap: np.ndarray, capacity_rows: float, *, reuse: bool = True,
               union: np.ndarray | None = None, n_keys: int | None = None) -> np.ndarray:
    """K/V rows fetched from off-chip memory for each query sequence: arrays (..., T) -> (...,).

    Without reuse every survivor is fetched. With adjacent-query reuse, of query i's survivors that
    query i-1 also kept, the fraction still resident is min(1, capacity / kept_{i-1}) (ASSUMPTION: the
    buffer holds the most recent ``capacity_rows`` K/V rows and the shared ones are spread uniformly
    among query i-1's survivors); those are not fetched again. When ``union`` (distinct keys kept by
    any query, (...,)) and ``n_keys`` are given and the buffer holds all ``n_keys`` K/V rows, each
    distinct survivor is fetched exactly once (nothing is ever evicted); otherwise at least once.
    """
    kept = np.asarray(kept, dtype=np.float64)
    if not reuse:
        return kept.sum(-1)
    overlap = np.asarray(overlap, dtype=np.float64)
    prev = np.concatenate([np.zeros_like(kept[..., :1]), kept[..., :-1]], axis=-1)
    resident = np.minimum(1.0, capacity_rows / np.maximum(prev, 1.0))
    out = (kept - overlap * resident).sum(-1)
    if union is not None:
        union = np.asarray(union, dtype=np.float64)
        out = union if (n_keys is not None and capacity_rows >= n_keys) else np.maximum(out, union)
    return out


@dataclass
class CostBreakdown:
    """Time (s) and energy (J) of the attention of one sequence through all layers of a model."""

    time_s: float
    energy: dict = field(default_factory=dict)  # component -> J
    traffic_bytes: float = 0.0
    macs: float = 0.0
    detail: dict = field(default_factory=dict)

    @property
    def energy_j(self) -> float:
        return float(sum(self.energy.values()))


def _kv_row_bytes(d_head: int, bpe: float) -> float:
    return 2 * d_head * bpe


def baseline_tile(buffer_bytes: float, d_head: int, bpe: float) -> int:
    """Most query rows a conventional accelerator can keep on chip: Q row + O accumulator row each, next
    to a double-buffered K/V staging area of 2 rows (ASSUMPTION: online softmax, no score matrix spills)."""
    stage = 2 * _kv_row_bytes(d_head, bpe)
    rows = int((buffer_bytes - stage) // (2 * d_head * bpe))
    if rows < 1:
        raise ValueError(f"a {buffer_bytes:g}-byte buffer cannot hold one query row next to the K/V staging")
    return rows


def _baseline_streamed_rows(T: int, bq: int, resident: int, causal: bool) -> float:
    """K/V rows fetched per head with query tiles of ``bq`` rows and ``resident`` K/V rows that stay on
    chip across tiles (the first tile fetches everything it needs)."""
    ends = np.minimum(np.arange(bq, T + bq, bq), T)
    need = ends.astype(np.float64) if causal else np.full(len(ends), float(T))
    fetched = np.maximum(0.0, need - resident)
    fetched[0] = need[0]
    return float(fetched.sum())


def baseline_cost(acc: Accelerator, *, layers: int, heads: int, seq_len: int, d_head: int, causal: bool = False,
                  bpe: float | None = None, query_tile: int | None = None) -> CostBreakdown:
    """A conventional digital accelerator (same buffer) computing exact attention for one sequence.

    Per head: Q read once, O written once, K and V written once after projection (compulsory, as in
    SPRINT) and streamed through the buffer once per tile of ``query_tile`` query rows; buffer space
    left after the tile's Q/O rows and the K/V staging holds K/V rows that stay resident across tiles.
    ``query_tile=None`` picks the tile that minimises traffic (the strongest baseline); ``query_tile=1``
    is a query-at-a-time dataflow (every query streams every K/V row it cannot keep resident). All T x T
    scores (causal: lower triangle) are computed. Heads and layers run one after another; compute and
    transfers overlap (roofline).
    """
    bpe = acc.bytes_per_element if bpe is None else bpe
    T = seq_len
    kv_row = _kv_row_bytes(d_head, bpe)
    cap = acc.buffer.capacity_bytes
    max_bq = baseline_tile(cap, d_head, bpe)
    resident_of = lambda b: int(max(0.0, cap - 2 * kv_row - b * 2 * d_head * bpe) // kv_row)
    if query_tile is None:
        cands = sorted(set([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, max_bq, min(max_bq, T)]))
        cands = [b for b in cands if 1 <= b <= min(max_bq, T)]
        bq = min(cands, key=lambda b: (_baseline_streamed_rows(T, b, resident_of(b), causal), -b))
    else:
        bq = int(query_tile)
        if not 1 <= bq <= max_bq:
            raise ValueError(f"query_tile must lie in [1, {max_bq}] for this buffer, got {query_tile}")
    bq = min(bq, T)
    resident = resident_of(bq)
    streamed = _baseline_streamed_rows(T, bq, resident, causal)
    scores = T * (T + 1) / 2 if causal else float(T * T)
    dram_bytes = streamed * kv_row + T * kv_row + 2 * T * d_head * bpe  # stream + K/V write + Q read/O write
    macs = 2 * scores * d_head
    sram_bytes = streamed * kv_row + macs * bpe  # fills + one operand per MAC
    per_head_t = max(acc.compute.time_s(macs), acc.vector.time_s(3 * scores), acc.dram.time_s(dram_bytes))
    n = layers * heads
    energy = {
        "DRAM": n * acc.dram.energy_j(dram_bytes),
        "SRAM": n * acc.buffer.energy_j(sram_bytes),
        "digital compute": n * (acc.compute.energy_j(macs) + acc.vector.energy_j(3 * scores)),
        "in-memory thresholding": 0.0,
    }
    return CostBreakdown(time_s=n * per_head_t, energy=energy, traffic_bytes=n * dram_bytes, macs=n * macs,
                         detail=dict(query_tile=bq, resident_rows=resident, streamed_rows=streamed, scores=n * scores))


def sprint_cost(acc: Accelerator, stats: list[RowStats], *, heads: int, d_head: int,
                xbar: rr.CrossbarSpec, cfg: AnalogConfig = AnalogConfig(), causal: bool = False,
                bpe: float | None = None, reuse: bool = True, include_writes: bool = True,
                readout: str = "comparator", parallel_queries: int = 1) -> CostBreakdown:
    """SPRINT on the same digital datapath and buffer, driven by MEASURED per-query keep statistics.

    stats: one `RowStats` per layer (arrays (N, H_real, T)); head h of the target model uses the
    measured head h mod H_real (see `map_stats_to_shape` for other depths). Per head: the crossbar
    scores every allowed (query, key) pair (energy: `hw.reram.scoring_cost`); survivors' K/V rows are
    fetched (`fetch_rows`, with the buffer left after one Q row and one O row as K/V capacity);
    survivors are recomputed exactly (2 x kept x d MACs, 3 softmax ops per survivor). The crossbar of
    every head of a layer works in parallel with the digital side (pipelined: per layer the time is the
    max of crossbar, compute and transfer time). Results are the mean over the N measured sequences.
    """
    bpe = acc.bytes_per_element if bpe is None else bpe
    kv_row = _kv_row_bytes(d_head, bpe)
    cap_rows = max(0.0, (acc.buffer.capacity_bytes - 2 * d_head * bpe) // kv_row)
    xb = xbar
    total_t = 0.0
    energy = {"DRAM": 0.0, "SRAM": 0.0, "digital compute": 0.0, "in-memory thresholding": 0.0}
    traffic = macs_total = 0.0
    kept_total = allowed_total = 0.0
    for st in stats:
        n_seq, h_real, T = st.kept.shape
        hidx = np.arange(heads) % h_real
        kept = st.kept[:, hidx].astype(np.float64)          # (N, heads, T)
        overlap = st.overlap[:, hidx].astype(np.float64)
        allowed = st.allowed[:, hidx].astype(np.float64)
        union = None if st.union is None else st.union[:, hidx]
        fetched = fetch_rows(kept, overlap, cap_rows, reuse=reuse, union=union, n_keys=T).mean(0)   # (heads,)
        n_kept = kept.sum(-1).mean(0)                                         # (heads,)
        n_allowed = allowed.sum(-1).mean(0)
        dram_bytes = fetched * kv_row + T * kv_row + 2 * T * d_head * bpe    # survivors + K/V write + Q/O
        macs = 2 * n_kept * d_head
        sram_bytes = fetched * kv_row + macs * bpe
        t_dig = sum(max(acc.compute.time_s(m), acc.vector.time_s(3 * nk)) for m, nk in zip(macs, n_kept))
        t_mem = acc.dram.time_s(float(dram_bytes.sum()))
        sc = rr.scoring_cost(T, float(n_allowed.mean()), d_head, key_bits=cfg.key_bits, query_bits=cfg.query_bits,
                             spec=xb, readout=readout, parallel_queries=parallel_queries)
        e_xbar = heads * sc.energy_j + (heads * rr.write_energy_j(T, d_head, key_bits=cfg.key_bits, spec=xb,
                                                                   copies=parallel_queries) if include_writes else 0.0)
        total_t += max(sc.time_s, t_dig, t_mem)
        energy["DRAM"] += acc.dram.energy_j(float(dram_bytes.sum()))
        energy["SRAM"] += acc.buffer.energy_j(float(sram_bytes.sum()))
        energy["digital compute"] += acc.compute.energy_j(float(macs.sum())) + acc.vector.energy_j(3 * float(n_kept.sum()))
        energy["in-memory thresholding"] += e_xbar
        traffic += float(dram_bytes.sum())
        macs_total += float(macs.sum())
        kept_total += float(n_kept.sum())
        allowed_total += float(n_allowed.sum())
    return CostBreakdown(time_s=total_t, energy=energy, traffic_bytes=traffic, macs=macs_total,
                         detail=dict(keep_fraction=kept_total / max(1.0, allowed_total), capacity_rows=cap_rows))


def map_stats_to_shape(stats: list[RowStats], layers: int) -> list[RowStats]:
    """Per-layer statistics for a model with ``layers`` layers from a measured model with fewer or more:
    layer l uses measured layer floor(l * L_measured / layers) (same relative depth). A SUBSTITUTION,
    stated wherever it is used (e.g. BERT-base shapes with MiniLM's measured masks)."""
    L = len(stats)
    return [stats[min(L - 1, (l * L) // layers)] for l in range(layers)]


# ----------------------------------------------------------------------------- real-model helpers
def token_windows(rm, docs: list[str], seq_len: int, n: int, seed: int = 0) -> dict:
    """A batch of ``n`` windows of exactly ``seq_len`` tokens cut from running text (no padding).

    Decoder: `attnlib.evaluate.text_windows` (BOS + text). Encoder: [CLS] + seq_len-2 text tokens +
    [SEP], consecutive non-overlapping chunks of each document, shuffled with ``seed``.
    """
    if rm.kind == "decoder":
        from .evaluate import text_windows

        ids = torch.tensor(text_windows(rm, docs, seq_len, n, seed=seed), dtype=torch.long)
    else:
        tok = rm.tokenizer
        body = seq_len - 2
        chunks = []
        for doc in docs:
            ids_doc = tok(doc, add_special_tokens=False, verbose=False)["input_ids"]
            chunks += [ids_doc[s:s + body] for s in range(0, len(ids_doc) - body + 1, body)]
        if len(chunks) < n:
            raise ValueError(f"only {len(chunks)} windows of {seq_len} tokens in the documents, {n} requested")
        order = np.random.default_rng(seed).permutation(len(chunks))[:n]
        ids = torch.tensor([[tok.cls_token_id] + chunks[i] + [tok.sep_token_id] for i in order], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class Calibrator:
    """Per-layer thresholds and analog-error margins from ONE capture of calibration text.

    Keeps, per layer, the allowed exact scaled scores sorted in descending order with the cumulative
    exact attention mass (so thresholds for many target masses cost one search each), and the
    queries (every ``row_stride``-th row) and keys to measure the analog error of any `AnalogConfig`.
    """

    def __init__(self, captures: list, row_stride: int = 1):
        self.row_stride = int(row_stride)
        self._sorted, self._cum, self._qk = [], [], []
        for cap in captures:
            q = cap.q[..., ::self.row_stride, :].float()
            k = cap.k.float()
            s = (q @ k.transpose(-1, -2)) * cap.scale
            allowed = allowed_from_mask(None if cap.mask is None else cap.mask[..., ::self.row_stride, :], s.shape)
            p = cap.probs[..., ::self.row_stride, :].float()[allowed].numpy().astype(np.float64)
            sv = s[allowed].numpy()
            order = np.argsort(-sv, kind="stable")
            cum = np.cumsum(p[order])
            self._sorted.append(sv[order])
            self._cum.append(cum / cum[-1])
            self._qk.append((q, k, None if cap.mask is None else cap.mask[..., ::self.row_stride, :], cap.scale))
        self._err: dict = {}

    @property
    def n_layers(self) -> int:
        return len(self._sorted)

    def thresholds(self, target_mass: float) -> np.ndarray:
        """Largest per-layer threshold keeping >= target_mass of the exact mass on the calibration rows."""
        if not 0 < target_mass <= 1:
            raise ValueError(f"target_mass must lie in (0, 1], got {target_mass}")
        out = np.empty(self.n_layers)
        for li, (s, cum) in enumerate(zip(self._sorted, self._cum)):
            idx = len(s) - 1 if target_mass >= 1 else int(np.searchsorted(cum, target_mass - 1e-12))
            out[li] = float(s[min(idx, len(s) - 1)])
        return out

    def error_std(self, cfg: AnalogConfig) -> np.ndarray:
        """Per-layer RMS of (analog - exact) scaled scores on the calibration rows (cached per cfg)."""
        if cfg not in self._err:
            out = np.empty(self.n_layers)
            for li, (q, k, mask, scale) in enumerate(self._qk):
                g = torch.Generator().manual_seed(int(cfg.seed) * 7919 + 101 * li)
                exact = (q @ k.transpose(-1, -2)) * scale
                err = analog_scores(q, k, scale, cfg, g) - exact
                allowed = allowed_from_mask(mask, exact.shape)
                out[li] = float(err[allowed].double().pow(2).mean().sqrt())
            self._err[cfg] = out
        return self._err[cfg]

    def attention_fn(self, target_mass: float, z: float, cfg: AnalogConfig, *, record: bool = False) -> SprintAttention:
        """`SprintAttention` with thresholds for ``target_mass`` and margins z x analog-error std."""
        return SprintAttention(self.thresholds(target_mass), z * self.error_std(cfg), cfg, record=record)


def compare(acc: Accelerator, xbar: rr.CrossbarSpec, cfg: AnalogConfig, shape, stats: list[RowStats], *,
            causal: bool, baseline_kw: dict | None = None, **sprint_kw) -> tuple[CostBreakdown, CostBreakdown]:
    """(baseline, SPRINT) cost of one sequence through every layer of ``shape`` (a `workloads.ModelShape`)
    with per-layer keep statistics ``stats`` measured on a real model (mapped by relative depth when
    the layer counts differ: `map_stats_to_shape`)."""
    st = map_stats_to_shape(stats, shape.layers)
    T = st[0].kept.shape[-1]
    base = baseline_cost(acc, layers=shape.layers, heads=shape.heads, seq_len=T, d_head=shape.d_head, causal=causal,
                         **(baseline_kw or {}))
    spr = sprint_cost(acc, st, heads=shape.heads, d_head=shape.d_head, xbar=xbar, cfg=cfg, causal=causal, **sprint_kw)
    return base, spr
