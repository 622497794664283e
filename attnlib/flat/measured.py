"""Measured check on this machine: FLAT-style fused row tiles vs unfused attention, wall clock with torch.

The intermediate memory is COMPUTED from tensor shapes, not measured. Both outputs are checked against
attnlib.attention.attention_torch.
"""
from __future__ import annotations

import math
import time

import numpy as np

# ----------------------------------------------------------------------------- measured check (torch)
def _torch_unfused(q, k, v, scale):
    import torch
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    p = torch.softmax(s, dim=-1)
    return torch.matmul(p, v)


def _torch_fused(q, k, v, scale, rows):
    import torch
    out = torch.empty_like(q[..., : v.shape[-1]])
    kt = k.transpose(-1, -2)
    for i in range(0, q.shape[-2], rows):
        s = torch.matmul(q[..., i:i + rows, :], kt) * scale
        out[..., i:i + rows, :] = torch.matmul(torch.softmax(s, dim=-1), v)
    return out


def measure_fused_vs_unfused(seqs, *, batch_heads: int = 4, d_head: int = 64, rows: int = 128, repeats: int = 3,
                             device: str | None = None, dtype=None, seed: int = 0) -> list[dict]:
    """Wall clock of unfused attention (whole N x N scores and probabilities materialised) vs FLAT-style
    fused row tiles (``rows`` query rows at a time, full-row softmax) with torch on ``device`` (cuda when
    available by default). Peak memory is the bytes of the intermediate tensors each allocates, COMPUTED
    from their shapes (scores + probabilities: 2 x BH x rows_at_once x N elements), not measured.
    Both outputs are checked against attnlib.attention.attention_torch."""
    import torch

    from ..attention import attention_torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or torch.float32
    esize = torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in seqs:
        q, k, v = (torch.randn(batch_heads, n, d_head, generator=gen, dtype=dtype).to(device) for _ in range(3))
        scale = 1.0 / math.sqrt(d_head)
        ref = attention_torch(q, k, v) if n <= 4096 else None
        times = {}
        for name, fn in (("unfused", lambda: _torch_unfused(q, k, v, scale)),
                         ("fused", lambda: _torch_fused(q, k, v, scale, rows))):
            res = fn()  # warm-up
            if ref is not None:
                err = float((res - ref).abs().max())
                if err > 1e-3:
                    raise AssertionError(f"{name} attention differs from the reference by {err:g}")
            best = math.inf
            for _ in range(repeats):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        r = min(rows, n)
        out.append(dict(seq=n, batch_heads=batch_heads, d_head=d_head, rows=r, device=device,
                        unfused_s=times["unfused"], fused_s=times["fused"],
                        speedup=times["unfused"] / times["fused"],
                        unfused_intermediate_bytes=2 * batch_heads * n * n * esize,
                        fused_intermediate_bytes=2 * batch_heads * r * n * esize))
    return out



def markdown_table(df, index: bool = False, digits: int = 3) -> str:
    """A pandas DataFrame as a Markdown table (no optional dependency such as tabulate)."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}g}"
        return str(v)
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ([fmt(idx)] if index else []) + [fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
