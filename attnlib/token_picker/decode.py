"""A decode-attention model with what the traffic ratio leaves out.

`hardware.attention_time_energy` charges bytes only: time = max(DRAM bytes / bandwidth, MACs, vector
ops) and dynamic energy, so its speedup and energy ratios are the traffic ratio again whenever the
design is memory-bound. `decode_model` adds, each as a labelled constant in `OVERHEADS` (value, source,
sweep) and each switchable off:

* **Burst granularity** (``burst_B``): every fetch is rounded up to whole bursts (the dense scan and the
  first-chunk plane stream whole bursts; a survivor's later chunk or value is its own fetch).
* **Row-buffer granularity** (``row_B``, ``t_rrd_ns``, ``channels``, ``act_nj``): the dense scan and the
  first-chunk plane are streams (each DRAM row opened once and read whole); the on-demand reads of the
  survivors' later chunks and values are scattered, so each row they touch is opened for a few bytes.
  Rows touched are estimated for survivors placed at random among the tokens (a row of m token-slots
  is touched with probability 1 - (1 - f)^m for a survivor fraction f): pessimistic where kept tokens
  cluster (sinks, recent tokens). Scattered reads are limited by the activation rate, one activation
  per tRRD per pseudo channel: t = max(bytes / bandwidth, activations * tRRD / channels); every
  activation beyond what streaming the same bytes would need costs ``act_nj``.
* **Gather / index overhead** (``index_B``, ``addr_lanes``): every scattered fetch needs its token's
  index read from the scoreboard and an address generated: ``index_B`` bytes of on-chip buffer traffic
  and one cycle of ``addr_lanes`` address lanes each (time on its own unit, overlapped like the rest).
* **Compute limit** (``pes``): the MAC lanes of the accelerator (`hardware.topick_accelerator(pes=...)`).
* **Static energy** (``static_w``): leakage of the unit plus DRAM background power, charged for the
  modelled time, so a faster design saves static energy in proportion to its speedup, not its traffic.

Time = max(DRAM, MAC, vector, address) per decode step (overlap assumed, as in `hardware`); energy =
dynamic (DRAM, extra activations, buffer incl. index traffic, MACs, vector ops) + static. With
`NO_OVERHEAD` (1-byte bursts, no activation limit or energy, no index, unlimited compute and
address lanes, no static power, on-chip energy off) the speedup and the energy ratio both equal the
traffic ratio (tests/test_token_picker_context.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .estimator import PickerConfig
from .hardware import CONSTANTS, _kv_context, fetch_bytes, topick_accelerator

__all__ = ["OVERHEADS", "Overheads", "DEFAULT_OVERHEADS", "NO_OVERHEAD", "decode_model", "OVERHEAD_SWEEPS"]

#: name -> (default, source, values swept)
OVERHEADS = {
    "burst_B": (32, "JESD235 HBM2: pseudo-channel burst BL4 x 64 bit = 32 B", (32, 64)),
    "row_B": (1024, "JESD235 HBM2: 1 KB page (row) per pseudo channel", (1024, 2048)),
    "t_rrd_ns": (4.0, "ASSUMPTION: activate-to-activate 4 ns per pseudo channel (HBM2 tRRD class; value not "
                      "taken from a datasheet)", (0.0, 2.0, 8.0)),
    "channels": (16, "JESD235 HBM2: 8 channels x 2 pseudo channels per stack", (16,)),
    "act_nj": (0.5, "ASSUMPTION: 0.5 nJ per extra 1 KB row activation (order of HBM2 activation energy; "
                    "not from a measured table)", (0.0, 0.25, 1.0)),
    "index_B": (4, "ASSUMPTION: a 4-byte token index read from the scoreboard buffer per scattered fetch",
                (0, 4, 8)),
    "addr_lanes": (32, "ASSUMPTION: 32 address-generation lanes at the clock (one scattered fetch per lane per "
                       "cycle)", (8, 32)),
    "pes": (1024, "ASSUMPTION: 1024 16-bit MAC lanes (hardware.CONSTANTS; ToPick's count not available)",
            (64, 256, 1024, 4096)),
    "static_w": (1.0, "ASSUMPTION: 1 W of leakage plus HBM background (refresh, standby) power for the "
                      "attention unit and its stack", (0.0, 1.0, 4.0)),
}


@dataclass(frozen=True)
class Overheads:
    """The decode model's overhead constants (see `OVERHEADS`); ``onchip`` False drops buffer, MAC and
    vector energy (DRAM energy alone), ``compute_limit`` False drops the MAC and vector time."""

    burst_B: float = OVERHEADS["burst_B"][0]
    row_B: float = OVERHEADS["row_B"][0]
    t_rrd_ns: float = OVERHEADS["t_rrd_ns"][0]
    channels: int = OVERHEADS["channels"][0]
    act_nj: float = OVERHEADS["act_nj"][0]
    index_B: float = OVERHEADS["index_B"][0]
    addr_lanes: float = OVERHEADS["addr_lanes"][0]
    pes: int = OVERHEADS["pes"][0]
    static_w: float = OVERHEADS["static_w"][0]
    onchip: bool = True
    compute_limit: bool = True

    def __post_init__(self):
        for name in ("burst_B", "row_B", "channels", "addr_lanes", "pes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"overhead {name} must be positive, got {getattr(self, name)}")
        for name in ("t_rrd_ns", "act_nj", "index_B", "static_w"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"overhead {name} must be finite and >= 0, got {v}")

    def with_(self, **kw) -> "Overheads":
        unknown = set(kw) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown overhead(s) {sorted(unknown)}; known: {sorted(self.__dataclass_fields__)}")
        return replace(self, **kw)


DEFAULT_OVERHEADS = Overheads()
NO_OVERHEAD = Overheads(burst_B=1, t_rrd_ns=0.0, act_nj=0.0, index_B=0, addr_lanes=math.inf, pes=1 << 30,
                        static_w=0.0, onchip=False, compute_limit=False)

#: One-at-a-time sweeps shown in the notebook: label -> changes from the defaults.
OVERHEAD_SWEEPS = {
    "no overhead (traffic only)": dict(t_rrd_ns=0.0, act_nj=0.0, index_B=0, addr_lanes=math.inf, static_w=0.0),
    "burst 64 B": dict(burst_B=64),
    "row 2 KB": dict(row_B=2048),
    "no activation limit": dict(t_rrd_ns=0.0),
    "tRRD 2 ns": dict(t_rrd_ns=2.0),
    "tRRD 8 ns": dict(t_rrd_ns=8.0),
    "activation 0.25 nJ": dict(act_nj=0.25),
    "activation 1 nJ": dict(act_nj=1.0),
    "no index traffic": dict(index_B=0),
    "index 8 B": dict(index_B=8),
    "8 address lanes": dict(addr_lanes=8),
    "64 PEs": dict(pes=64),
    "256 PEs": dict(pes=256),
    "4096 PEs": dict(pes=4096),
    "no static power": dict(static_w=0.0),
    "static 4 W": dict(static_w=4.0),
}


def _rows_touched(n_reads, n_tokens, slot_bytes: float, row_B: float):
    """Expected DRAM rows touched by ``n_reads`` reads placed at random among ``n_tokens`` token slots of
    ``slot_bytes`` each, stored contiguously in rows of ``row_B`` bytes."""
    n_reads, n_tokens = np.asarray(n_reads, dtype=np.float64), np.asarray(n_tokens, dtype=np.float64)
    m = max(1.0, row_B / max(slot_bytes, 1e-9))  # token slots per row
    f = np.clip(n_reads / np.maximum(n_tokens, 1.0), 0.0, 1.0)
    rows = np.ceil(n_tokens / m) * (1.0 - (1.0 - f) ** m)
    return np.minimum(np.maximum(rows, np.where(n_reads > 0, 1.0, 0.0)), n_reads)


def decode_model(counts: dict, cfg: PickerConfig, d_head: int, ov: Overheads = DEFAULT_OVERHEADS, *,
                 shared_kv: bool = False, acc=None) -> dict:
    """Modelled time (s) and energy (J) per decode step (summed over the head axis, -2), dense vs
    Token-Picker, with the overheads of ``ov``. counts: arrays of the estimator (n_context, n_kept,
    key_chunks and the kv_* union counts for ``shared_kv``). Returns {"dense"|"topick": {time_s,
    energy_j, t_dram, t_mac, t_vec, t_addr, bytes, activations, energy: {part: J}}}."""
    acc = acc or topick_accelerator(pes=int(min(ov.pes, 1 << 30)))
    ctx_q = np.asarray(counts["n_context"], dtype=np.float64)
    if shared_kv:
        chunks, vals = np.asarray(counts["kv_key_chunks"], np.float64), np.asarray(counts["kv_n_values"], np.float64)
        ctx = _kv_context(ctx_q, chunks.shape)
    else:
        chunks, vals, ctx = np.asarray(counts["key_chunks"], np.float64), np.asarray(counts["n_kept"], np.float64), ctx_q
    n_q, n_kv = ctx_q.shape[-2], ctx.shape[-2]
    group = n_q // n_kv
    g = ov.burst_B
    sb = CONSTANTS["scale_bytes"][0]
    widths = cfg.chunk_widths
    b_key, b_val = fetch_bytes(cfg.k_bits, d_head, g), fetch_bytes(cfg.v_bits, d_head, g)
    b_first = fetch_bytes(widths[0], d_head, g)
    b_more = float(np.mean([fetch_bytes(w, d_head, g) for w in widths[1:]])) if len(widths) > 1 else 0.0
    n_later_planes = max(len(widths) - 1, 1)
    later = chunks - ctx  # later-chunk fetches (scattered)
    bw = acc.dram.bandwidth
    t_act = ov.t_rrd_ns * 1e-9 / ov.channels
    dram_pj = acc.dram.read_pj_per_bit * 8  # per byte
    buf_pj = acc.buffer.read_pj_per_bit * 8
    mac16 = acc.compute.mac_pj

    def tot(x):
        return np.asarray(x, dtype=np.float64).sum(axis=-2)

    res = {}
    for name in ("dense", "topick"):
        if name == "dense":
            stream = ctx * (b_key + b_val + 2 * sb)
            scatter, acts, reads = np.zeros_like(ctx), np.zeros_like(ctx), np.zeros_like(ctx)
            macs_q = 2 * d_head * ctx_q
            mac_e = macs_q * mac16
            vec = ctx_q
        else:
            stream = ctx * (b_first + sb)
            scatter = later * b_more + vals * (b_val + sb)
            reads = later + vals
            acts = (n_later_planes * _rows_touched(later / n_later_planes, ctx, b_more, ov.row_B)
                    + _rows_touched(vals, ctx, b_val, ov.row_B))
            chunk_evals = np.asarray(counts["key_chunks"], np.float64)
            kept = np.asarray(counts["n_kept"], np.float64)
            macs_q = d_head * (chunk_evals + kept)
            frac = np.array(widths, dtype=float) / CONSTANTS["mac_bits"][0]
            later_frac = frac[1:].mean() if len(frac) > 1 else 0.0
            mac_e = d_head * mac16 * (ctx_q * frac[0] + (chunk_evals - ctx_q) * later_frac + kept)
            vec = 2 * chunk_evals + kept
        stream_b, scatter_b, n_acts, n_reads = tot(stream), tot(scatter), tot(acts), tot(reads)
        t_dram = stream_b / bw + np.maximum(scatter_b / bw, n_acts * t_act)
        extra_acts = np.maximum(n_acts - scatter_b / ov.row_B, 0.0) if ov.act_nj > 0 else np.zeros_like(n_acts)
        if ov.compute_limit:
            t_mac = tot(macs_q) / acc.compute.peak_macs_per_s
            t_vec = tot(vec) / (acc.vector.lanes * acc.vector.clock_hz)
        else:
            t_mac = t_vec = np.zeros_like(t_dram)
        t_addr = n_reads / (ov.addr_lanes * acc.compute.clock_hz) if math.isfinite(ov.addr_lanes) else np.zeros_like(t_dram)
        time_s = np.maximum(np.maximum(t_dram, t_mac), np.maximum(t_vec, t_addr))
        dram_b = stream_b + scatter_b
        e = dict(dram=dram_b * dram_pj * 1e-12, activations=extra_acts * ov.act_nj * 1e-9)
        if ov.onchip:
            e.update(buffer=(dram_b * (1 + group) + n_reads * ov.index_B) * buf_pj * 1e-12,
                     mac=tot(mac_e) * 1e-12, vector=tot(vec) * acc.vector.op_pj * 1e-12)
        e["static"] = ov.static_w * time_s
        res[name] = dict(time_s=time_s, t_dram=t_dram, t_mac=t_mac, t_vec=t_vec, t_addr=t_addr, bytes=dram_b,
                         activations=n_acts, energy_j=sum(e.values()), energy=e)
    return res
