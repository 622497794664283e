"""Exact reference attention, in numpy and in torch, and its FLOP / byte counts.

Every approximate method in the workbook is checked against these functions.

Shapes (any number of leading batch dimensions, e.g. (batch, heads)):
    q: (..., Tq, d)      k: (..., Tk, d)      v: (..., Tk, dv)      output: (..., Tq, dv)
    probabilities: (..., Tq, Tk)
Masks broadcast to (..., Tq, Tk). A boolean mask is True where attention is ALLOWED; a float mask is
added to the scores (0 allowed, -inf forbidden). A query row with no allowed key yields zeros.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "softmax",
    "attention",
    "attention_torch",
    "decode_step",
    "decode_step_torch",
    "causal_mask",
    "padding_mask",
    "AttentionCost",
    "attention_cost",
    "decode_cost",
]


# ----------------------------------------------------------------------------- validation
def _check_qkv(q, k, v) -> None:
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(
            f"q, k, v need at least 2 dims (..., T, d); got q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query width {q.shape[-1]} != key width {k.shape[-1]} (q{tuple(q.shape)}, k{tuple(k.shape)})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"keys ({k.shape[-2]}) and values ({v.shape[-2]}) hold a different number of tokens")
    if k.shape[-2] == 0:
        raise ValueError("attention over an empty key set (Tk = 0) is undefined")


def _scale(d: int, scale: float | None) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return float(scale)


# ----------------------------------------------------------------------------- masks
def causal_mask(q_len: int, k_len: int | None = None) -> np.ndarray:
    """Boolean (q_len, k_len) mask; query i (the LAST q_len positions of k_len) sees keys <= itself."""
    k_len = q_len if k_len is None else k_len
    if q_len > k_len:
        raise ValueError(f"causal mask needs q_len <= k_len, got {q_len} > {k_len}")
    offset = k_len - q_len
    return np.arange(k_len)[None, :] <= (np.arange(q_len)[:, None] + offset)


def padding_mask(lengths, k_len: int) -> np.ndarray:
    """Boolean (batch, 1, 1, k_len) mask from the true length of each sequence (right padding)."""
    lengths = np.asarray(lengths)
    if np.any(lengths < 1) or np.any(lengths > k_len):
        raise ValueError(f"lengths must lie in [1, {k_len}], got {lengths.tolist()}")
    return (np.arange(k_len)[None, :] < lengths[:, None])[:, None, None, :]


# ----------------------------------------------------------------------------- numpy
def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; a slice that is entirely -inf gives zeros (not NaN)."""
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def _scores_np(q, k, mask, causal, scale):
    s = (q @ np.swapaxes(k, -1, -2)) * _scale(q.shape[-1], scale)
    if causal:
        s = np.where(causal_mask(q.shape[-2], k.shape[-2]), s, -np.inf)
    if mask is not None:
        mask = np.asarray(mask)
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    return s


def attention(q, k, v, *, mask=None, causal: bool = False, scale: float | None = None,
              return_probs: bool = False):
    """Exact softmax(q k^T * scale + mask) v in numpy. See the module docstring for shapes."""
    q, k, v = (np.asarray(t) for t in (q, k, v))
    _check_qkv(q, k, v)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(k)) and np.all(np.isfinite(v))):
        raise ValueError("q, k or v contains NaN or inf")
    p = softmax(_scores_np(q, k, mask, causal, scale))
    out = p @ v
    return (out, p) if return_probs else out


def decode_step(q, k_cache, v_cache, *, scale: float | None = None, return_probs: bool = False):
    """One autoregressive step: q (..., d) against a KV cache (..., T, d) -> (..., dv)."""
    q = np.asarray(q)
    out = attention(q[..., None, :], k_cache, v_cache, scale=scale, return_probs=return_probs)
    if return_probs:
        return out[0][..., 0, :], out[1][..., 0, :]
    return out[..., 0, :]


# ----------------------------------------------------------------------------- torch
def attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, causal: bool = False,
                    scale: float | None = None, return_probs: bool = False):
    """Exact attention in torch (any device, computed in the inputs' dtype). Same contract as `attention`."""
    _check_qkv(q, k, v)
    s = torch.matmul(q, k.transpose(-1, -2)) * _scale(q.shape[-1], scale)
    if causal:
        cm = torch.as_tensor(causal_mask(q.shape[-2], k.shape[-2]), device=s.device)
        s = s.masked_fill(~cm, float("-inf"))
    if mask is not None:
        mask = torch.as_tensor(mask, device=s.device)
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.to(s.dtype)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    denom = e.sum(dim=-1, keepdim=True)
    p = torch.where(denom > 0, e / denom.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))
    out = torch.matmul(p, v)
    return (out, p) if return_probs else out


def decode_step_torch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, *,
                      scale: float | None = None, return_probs: bool = False):
    """One decode step in torch: q (..., d), cache (..., T, d) -> (..., dv)."""
    out = attention_torch(q.unsqueeze(-2), k_cache, v_cache, scale=scale, return_probs=return_probs)
    if return_probs:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


# ----------------------------------------------------------------------------- costs
@dataclass(frozen=True)
class AttentionCost:
    """Work and minimum off-chip traffic of one attention call.

    flops: floating-point operations (a multiply-add counts 2) of QK^T and PV;
    softmax_ops: exp + add + divide per score (counted separately, vector-unit work);
    bytes_qkvo: bytes of Q, K, V read and O written once (the compulsory traffic);
    bytes_scores: bytes of the score/probability matrix if it is written out and read back
        (write logits, read for softmax, write probabilities, read for PV: 4 passes);
    intensity: flops / bytes_qkvo (FLOP per byte) with the scores kept on chip.
    """

    flops: float
    softmax_ops: float
    bytes_qkvo: float
    bytes_scores: float

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes_qkvo

    @property
    def intensity_unfused(self) -> float:
        return self.flops / (self.bytes_qkvo + self.bytes_scores)


def attention_cost(batch: int, heads: int, q_len: int, kv_len: int, d_head: int, *,
                   bytes_per_element: float = 2.0, causal: bool = False, kv_heads: int | None = None) -> AttentionCost:
    """FLOPs and bytes of attention for one layer. ``kv_heads`` < heads models GQA (K/V shared).

    With ``causal`` only the allowed (lower-triangular) scores are counted.
    """
    for name, val in dict(batch=batch, heads=heads, q_len=q_len, kv_len=kv_len, d_head=d_head).items():
        if int(val) != val or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val}")
    if bytes_per_element <= 0:
        raise ValueError(f"bytes_per_element must be positive, got {bytes_per_element}")
    kv_heads = heads if kv_heads is None else kv_heads
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"kv_heads ({kv_heads}) must divide heads ({heads})")
    if causal:
        if q_len > kv_len:
            raise ValueError("causal attention needs q_len <= kv_len")
        # query i of the last q_len positions sees kv_len - q_len + i + 1 keys
        scores = q_len * (kv_len - q_len) + q_len * (q_len + 1) / 2
    else:
        scores = q_len * kv_len
    scores *= batch * heads
    flops = 2 * scores * d_head * 2  # QK^T and PV, 2 FLOPs per MAC
    elems_qkvo = batch * (2 * heads * q_len * d_head + 2 * kv_heads * kv_len * d_head)
    return AttentionCost(
        flops=float(flops),
        softmax_ops=float(3 * scores),
        bytes_qkvo=float(elems_qkvo * bytes_per_element),
        bytes_scores=float(4 * scores * bytes_per_element),
    )


def decode_cost(batch: int, heads: int, context: int, d_head: int, *, bytes_per_element: float = 2.0,
                kv_heads: int | None = None) -> AttentionCost:
    """Cost of one decode step (one new query per sequence against ``context`` cached tokens)."""
    return attention_cost(batch, heads, 1, context, d_head, bytes_per_element=bytes_per_element, kv_heads=kv_heads)
