"""The five ideas as league entries: where each applies, its knob, the attention function that runs it
inside a real model (so quality and counts come from the same pass), and the work it leaves.

Each technique is the project's own tested implementation:

- FLAT: fused attention (`attnlib.flat`): the same arithmetic, the logits never leave the chip. Exact
  (no knob; quality loss 0 by construction: the output is the reference attention).
- A3: the greedy candidate search (`attnlib.a3.algorithm.a3_attention`), knob M/n (iterations per
  query over the allowed keys). Counted: greedy iterations (one multiply and compare each), exact
  scores, softmax and PV over the candidates, the column sort (d n log2 n compares per head and unit;
  a decode step inserts one key: d log2 n) and one extra read of the sorted key columns. K and V are
  read in full (ASSUMPTION: the search needs every column; the paper keeps them on chip).
- SPRINT: in-memory pruning with thresholds calibrated to keep a target attention mass
  (`attnlib.sprint.algorithm.Calibrator`, analog noise and margin as the SPRINT notebook's frozen
  model), knob the kept mass. Needs ReRAM main memory. Counted: a 4-bit in-memory MAC per allowed
  (query, key, d) product; exact scores, softmax and PV over the survivors; K/V rows read only where a
  survivor needs them (a decode step: the union over the query heads sharing a KV head; an encoder
  forward or a decoder prefill: the union over all queries of the head sharing the KV head).
- Token-Picker: the paper's probability estimator (`attnlib.token_picker.estimator.token_pick`), knob
  the pruning threshold; decode steps only. Counted: key chunks and values actually fetched per KV
  head (12-bit storage, 4-bit chunks), chunk MACs at chunk_bits/16 of a 16-bit MAC, exact softmax and
  PV over the kept tokens, two vector ops per chunk bound.
- AttMEMO: memoised attention maps for an encoder serving a stream of inputs; needs the stream's hit
  rate (measured by `attnlib.attmemo`); on a hit the memoised layers skip QK^T and softmax but read the
  stored probability maps from main memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .template import Template, Work
from .workloads import BYTES, DenseCounts, Workload, attention_work

TECHNIQUES = ("FLAT", "A3", "SPRINT", "Token-Picker", "AttMEMO")
#: Combinations whose mechanisms are independent: fusion keeps whatever logits are left on chip.
COMBINATIONS = (("FLAT", "SPRINT"), ("FLAT", "A3"), ("FLAT", "Token-Picker"))
#: Knob name and the grid each workload's quality run sweeps (most conservative first).
KNOBS = {"A3": ("M/n (greedy iterations per allowed key)", (0.5, 0.25, 0.125)),
         "SPRINT": ("attention mass kept", (0.999, 0.995, 0.98, 0.95, 0.9)),
         "Token-Picker": ("pruning threshold", (1e-4, 3e-4, 1e-3, 3e-3))}
TP_CFG = dict(k_bits=12, chunk_bits=4, v_bits=12)


def not_applicable(tech: str, w: Workload, tpl: Template) -> str | None:
    """Why ``tech`` does not apply to ``w`` on ``tpl`` (None: it applies)."""
    if tech not in TECHNIQUES:
        raise ValueError(f"unknown technique {tech!r}; known: {', '.join(TECHNIQUES)}")
    if tech == "Token-Picker" and w.phase != "decode":
        return ("the estimator prunes the cached tokens of a decode step; the paper runs prompt rows densely "
                "(prefill and encoder passes have no KV cache to prune)")
    if tech == "AttMEMO" and w.model != "minilm-l6":
        return ("memoises whole-input attention maps of an encoder serving a stream of requests; a decoder's "
                "maps change with every generated token")
    if tech == "SPRINT" and tpl.memory != "ReRAM":
        return f"scores keys inside ReRAM main memory; this template's main memory is {tpl.memory}"
    return None


@dataclass
class Counts:
    """Sums a technique's attention function recorded, per call (one batch or window) so intervals can
    resample calls: each field a list with one entry per call (summed over layers and heads)."""

    fields: dict = field(default_factory=dict)

    def add(self, call: int, **sums) -> None:
        for name, value in sums.items():
            col = self.fields.setdefault(name, [])
            while len(col) <= call:
                col.append(0.0)
            col[call] += float(value)

    def arrays(self) -> dict:
        n = max((len(v) for v in self.fields.values()), default=0)
        return {k: np.asarray(v + [0.0] * (n - len(v))) for k, v in self.fields.items()}


class _Calls:
    """Which call (batch / window) a layer invocation belongs to: a new call starts at layer 0."""

    def __init__(self):
        self.call = -1

    def layer(self, layer: int) -> int:
        if layer == 0:
            self.call += 1
        return max(self.call, 0)


def _group_union(keep: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, H, Tq, Tk) keep -> (B, H/groups, Tq, Tk): kept by any head of the KV group."""
    b, h, tq, tk = keep.shape
    return keep.reshape(b, h // groups, groups, tq, tk).any(2)


def a3_fn(m_frac: float, counts: Counts):
    """A3 in place of exact attention, recording candidates and iterations per call."""
    from ..a3.algorithm import a3_attention

    calls = _Calls()

    def fn(q, k, v, mask, scale, layer):
        call = calls.layer(layer)
        with torch.no_grad():
            res = a3_attention(q.detach().float(), k.detach().float(), v.detach().float(), m_frac=m_frac, scale=scale,
                               mask=None if mask is None else mask.detach().float())
        live = res.n_allowed > 0
        counts.add(call, allowed=res.n_allowed[live].sum(), candidates=res.n_candidates[live].sum(),
                   iterations=res.m[live].sum(), queries=live.sum())
        return res.out.to(q.dtype)

    return fn


def sprint_fn(calibrator, mass: float, counts: Counts, *, z: float, cfg, kv_groups: int, decode: bool):
    """SPRINT (calibrated thresholds, analog noise, margin z x error std) recording survivors and rows."""
    from ..sprint.algorithm import sprint_attention

    sa = calibrator.attention_fn(mass, z, cfg)
    calls = _Calls()

    def fn(q, k, v, mask, scale, layer):
        call = calls.layer(layer)
        qc, kc, vc = q.detach().float(), k.detach().float(), v.detach().float()
        mc = None if mask is None else mask.detach()
        keep, allowed = sa.keep_mask(qc, kc, mc, scale, layer)
        out = sprint_attention(qc, kc, vc, keep, mc, scale)
        if decode:   # each row is a decode step: rows fetched per step, shared by the KV group
            rows = _group_union(keep, kv_groups).sum()
            rows_allowed = _group_union(allowed, kv_groups).sum()
        else:        # one forward: a row is fetched once if any query of the head keeps it
            rows = _group_union(keep.any(-2, keepdim=True), kv_groups).sum()
            rows_allowed = _group_union(allowed.any(-2, keepdim=True), kv_groups).sum()
        counts.add(call, allowed=allowed.sum(), kept=keep.sum(), rows=rows, rows_allowed=rows_allowed)
        return out.to(q.dtype)

    return fn


def token_picker_fn(threshold: float, counts: Counts, *, kv_groups: int):
    """Token-Picker on every query row (each a decode step against its causal prefix)."""
    from ..token_picker.estimator import PickerConfig, token_pick

    cfg = PickerConfig(threshold=threshold, **TP_CFG)
    calls = _Calls()

    def fn(q, k, v, mask, scale, layer):
        call = calls.layer(layer)
        causal = mask is None and q.shape[-2] > 1
        res = token_pick(q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), cfg, scale=scale, kv_groups=kv_groups,
                         mask=None if mask is None else mask.detach().cpu(), causal=causal)
        counts.add(call, allowed=res.n_context.sum(), kept=res.n_kept.sum(), kv_chunks=res.kv_key_chunks.sum(),
                   kv_values=res.kv_n_values.sum(), kv_context=res.n_context[:, ::kv_groups].sum())
        return res.out.to(dtype=q.dtype, device=q.device)

    return fn


def technique_work(tech: str, sums: dict, c: DenseCounts, w: Workload, tpl: Template, *, fused: bool = False,
                   hit_rate: float | None = None, memoised_layers: float = 1.0) -> Work:
    """The attention work of ``tech`` on one unit, from the recorded ``sums`` (totals over calls)."""
    d = c.d_head
    if tech == "dense":
        return attention_work(c, tpl, fused=fused)
    if tech == "FLAT":
        return attention_work(c, tpl, fused=True)
    if tech == "A3":
        keep = sums["candidates"] / sums["allowed"]
        iters = sums["iterations"] / sums["allowed"] * c.scores          # greedy iterations, scaled to the unit
        n = w.context
        heads = c.q_bytes / (w.rows * d * BYTES)                          # layers x query heads
        sort = heads * d * (math.log2(n) if w.phase == "decode" else n * math.log2(n))
        extra = Work(macs=iters, vector_ops=iters + sort, read_bytes=c.k_bytes)
        return attention_work(c, tpl, keep=keep, fused=fused, extra=extra)
    if tech == "SPRINT":
        keep = sums["kept"] / sums["allowed"]
        kv = sums["rows"] / sums["rows_allowed"]
        return attention_work(c, tpl, keep=keep, kv_read=kv, fused=fused, extra=Work(in_memory_macs=c.scores * d))
    if tech == "Token-Picker":
        keep = sums["kept"] / sums["allowed"]
        k_frac = sums["kv_chunks"] * TP_CFG["chunk_bits"] / (sums["kv_context"] * 16)   # of the 16-bit K bytes
        v_frac = sums["kv_values"] * TP_CFG["v_bits"] / (sums["kv_context"] * 16)
        chunk_macs = sums["kv_chunks"] / sums["kv_context"] * c.scores * d * TP_CFG["chunk_bits"] / 16
        base = attention_work(c, tpl, keep=keep, kv_read=0.0, fused=fused)
        fetched = k_frac * c.k_bytes + v_frac * c.v_bytes
        qk_exact = c.scores * keep * d                                    # the exact QK^T of kept tokens is not redone
        return Work(macs=base.macs - qk_exact + chunk_macs,
                    vector_ops=base.vector_ops + 2 * sums["kv_chunks"] / sums["kv_context"] * c.scores,
                    read_bytes=base.read_bytes + fetched, write_bytes=base.write_bytes,
                    buffer_bytes=base.buffer_bytes + fetched)
    if tech == "AttMEMO":
        if hit_rate is None or not 0 <= hit_rate <= 1:
            raise ValueError(f"AttMEMO needs the stream's hit rate in [0, 1], got {hit_rate}")
        dense = attention_work(c, tpl, fused=fused)
        h = hit_rate * memoised_layers
        maps = c.scores * BYTES                                            # stored probability maps, read on a hit
        return Work(macs=dense.macs * (1 - h / 2), vector_ops=dense.vector_ops * (1 - h),
                    read_bytes=dense.read_bytes - h * c.k_bytes + h * maps, write_bytes=dense.write_bytes,
                    buffer_bytes=dense.buffer_bytes)
    raise ValueError(f"unknown technique {tech!r}; known: dense, {', '.join(TECHNIQUES)}")
