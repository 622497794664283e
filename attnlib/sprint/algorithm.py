"""SPRINT's algorithm: in-memory analog scoring, comparator thresholding, exact recomputation of the
survivors, the attention function for real models, per-query keep statistics and threshold calibration.
(See `attnlib.sprint` for the overview.)"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "AnalogConfig", "quantize_symmetric", "analog_scores", "allowed_from_mask", "prune_mask",
    "sprint_attention", "SprintAttention", "calibrate_thresholds", "analog_error_std", "RowStats",
    "merge_stats", "Calibrator", "ALLOWED_ABOVE",
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
    keep_bits: np.ndarray | None = None  # (N, H, T, ceil(Tk / 8)) uint8: the keep masks, bit-packed (optional)
    n_keys: int | None = None  # Tk of the recorded masks (set with keep_bits)

    def keep_masks(self) -> np.ndarray:
        """The recorded keep masks, bool (N, H, T, Tk) (query i keeps key j); needs ``record_masks=True``."""
        if self.keep_bits is None:
            raise ValueError(f"layer {self.layer}: keep masks were not recorded (SprintAttention(record_masks=True))")
        return np.unpackbits(self.keep_bits, axis=-1, count=int(self.n_keys)).astype(bool)

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


def _row_stats(layer: int, keep: torch.Tensor, allowed: torch.Tensor, probs: torch.Tensor,
               masks: bool = False) -> RowStats:
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
                    union.numpy().astype(np.int32),
                    np.packbits(keep.numpy(), axis=-1) if masks else None, int(tk) if masks else None)


def merge_stats(parts: list[RowStats]) -> RowStats:
    """Concatenate RowStats of the same layer along the sequence axis."""
    if not parts:
        raise ValueError("no statistics to merge")
    if any(p.layer != parts[0].layer for p in parts) or any(p.kept.shape[1:] != parts[0].kept.shape[1:] for p in parts):
        raise ValueError("can only merge stats of one layer with the same (H, T)")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts], axis=0)
    union = cat("union") if all(p.union is not None for p in parts) else None
    bits = cat("keep_bits") if all(p.keep_bits is not None for p in parts) else None
    return RowStats(parts[0].layer, cat("kept"), cat("overlap"), cat("allowed"), cat("mass"), cat("valid"), union,
                    bits, parts[0].n_keys if bits is not None else None)


# ----------------------------------------------------------------------------- the attention function
class SprintAttention:
    """SPRINT attention as an `attnlib.models` AttnFn: ``fn(q, k, v, mask, scale, layer) -> out``.

    thresholds: per-layer thresholds on the SCALED score (q.k * scale), a sequence indexed by layer
    (-inf: no pruning in that layer); margins: per-layer safety margins (scalar or sequence) subtracted
    from the threshold; cfg: the analog front end. ``record=True`` keeps per-layer `RowStats` in
    ``self.stats[layer]`` (a list, one entry per call); ``record_masks=True`` also keeps the bit-packed
    keep masks in them (for the buffer policies of `attnlib.sprint.buffer`).
    """

    def __init__(self, thresholds, margins=0.0, cfg: AnalogConfig = AnalogConfig(), *, record: bool = False,
                 record_masks: bool = False):
        self.thresholds = np.asarray(thresholds, dtype=float)
        m = np.asarray(margins, dtype=float)
        self.margins = np.broadcast_to(m, self.thresholds.shape).copy() if m.ndim == 0 else m
        if self.margins.shape != self.thresholds.shape:
            raise ValueError(f"margins {self.margins.shape} and thresholds {self.thresholds.shape} differ in shape")
        self.cfg = cfg
        self.record = record or record_masks
        self.record_masks = record_masks
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
            self.stats.setdefault(layer, []).append(_row_stats(layer, keep, allowed, probs, self.record_masks))
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

    def attention_fn(self, target_mass: float, z: float, cfg: AnalogConfig, *, record: bool = False,
                     record_masks: bool = False) -> SprintAttention:
        """`SprintAttention` with thresholds for ``target_mass`` and margins z x analog-error std."""
        return SprintAttention(self.thresholds(target_mass), z * self.error_std(cfg), cfg, record=record,
                               record_masks=record_masks)


