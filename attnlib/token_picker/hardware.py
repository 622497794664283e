"""Token-Picker hardware side: off-chip traffic of a decode step and a memory-bound decode-attention
accelerator model (time and dynamic energy), built from `attnlib.hw`.

What the model contains and what it leaves out
----------------------------------------------
* Off-chip memory is HBM (paper card, [secondary]: Fig. 5 of the paper). One HBM2 stack of JESD235
  (256 GB/s); every fetch is rounded up to the 32-byte pseudo-channel access (`fetch_bytes`). Key chunks
  are stored as separate MSB-first chunk planes, so a token's chunk is one fetch.
* LEFT OUT HERE: DRAM row-buffer locality, gather/index costs and static energy. This bytes-only model
  (`attention_time_energy`) is kept as the "bytes-only" alternative row; `attnlib.token_picker.decode`
  (`decode_model`) adds bursts, row activations of the scattered on-demand reads, index/address work,
  the PE limit and static power, each labelled and swept, and is what the headline speedup and energy
  use.
* Every constant carries its source or is marked ASSUMPTION in `CONSTANTS`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import hw
from ..hw import KiB
from .estimator import PickerConfig

__all__ = ["CONSTANTS", "topick_accelerator", "fetch_bytes", "traffic_bytes", "attention_time_energy"]

#: Every constant of the decode-attention hardware model: (value, source). The Token-Picker paper's
#: own accelerator parameters are not available to this workbook (card: "[unconfirmed] ... all hardware
#: parameters"), so the machine below is a stated, generic memory-bound design.
CONSTANTS = {
    "dram_bandwidth_Bps": (256e9, "JEDEC JESD235 HBM2: one stack, 8 channels x 128 bit x 2 Gb/s = 256 GB/s "
                                  "(ASSUMPTION: one stack serves the attention unit)"),
    "dram_kind": ("dram_hbm2", "off-chip HBM [secondary: paper Fig. 5, per the card]; O'Connor et al. MICRO'17: "
                              "HBM2 ~3.9 pJ/bit (shared energy table)"),
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
