"""Decoder quality of a replaced attention on the league's workloads, from one pass that also records
counts (encoder quality is `attnlib.evaluate.probe_correct`, called by `experiment.run_encoder`).

- `DecodeBench`: teacher-forced decode steps: each window's first ``prefix`` tokens run ONCE with exact
  attention (their KV cache is reused by every attention function), then the remaining rows run in one
  pass with the function under test, each row a decode step against its own causal prefix; per-window
  NLL sums (nats) and token counts of the scored tokens.
- `PrefillBench`: a prompt processed in one causal forward with the function under test in EVERY row and
  layer (no exact prefix: the keys and values of later layers come from the pruned earlier ones);
  per-window NLL sums of every next-token prediction of the prompt (tokens 1 .. T-1).
"""
from __future__ import annotations

import numpy as np
import torch

from ..models import exact_prefix_cache, tail_nll


def causal_fallback(fn):
    """Wrap an AttnFn so a missing mask on Tq > 1 rows becomes the causal mask (last Tq of Tk keys)."""
    def wrapped(q, k, v, mask, scale, layer):
        tq, tk = q.shape[-2], k.shape[-2]
        if mask is None and tq > 1:
            i = torch.arange(tq)[:, None] + (tk - tq)
            mask = torch.where(torch.arange(tk)[None, :] <= i, 0.0, float("-inf")).to(q.dtype)[None, None]
        return fn(q, k, v, mask, scale, layer)

    return wrapped


class DecodeBench:
    """Teacher-forced decode steps on fixed windows: each window's first ``prefix`` tokens run ONCE with
    exact attention (their KV caches stay in memory), then `nll` scores the remaining rows with any
    attention function, as often as asked (one knob after another, each against the same caches).

    windows: token-id lists of one length T > prefix + 1; rows prefix .. T-2 are decode steps scoring
    tokens prefix+1 .. T-1."""

    def __init__(self, rm, windows, prefix: int):
        if rm.kind != "decoder":
            raise ValueError("decode quality needs a decoder model")
        lengths = {len(w) for w in windows}
        if len(lengths) != 1 or not 1 <= prefix <= min(lengths) - 2:
            raise ValueError(f"windows must share one length > prefix + 1; got lengths {sorted(lengths)}, prefix {prefix}")
        self.rm, self.prefix = rm, int(prefix)
        self.ids = [torch.tensor([w], dtype=torch.long, device=rm.device) for w in windows]
        self._past = [None] * len(windows)

    def nll(self, fn=None, name: str = "exact") -> dict:
        """dict(nll=(W,) summed nats, tokens=(W,)) with ``fn`` (None = exact) in every layer."""
        out = dict(nll=np.zeros(len(self.ids)), tokens=np.zeros(len(self.ids)))
        for wi, ids in enumerate(self.ids):
            if self._past[wi] is None:
                self._past[wi] = exact_prefix_cache(self.rm, ids, self.prefix)
            nll = tail_nll(self.rm, ids, self.prefix, self._past[wi], None if fn is None else causal_fallback(fn))
            if not torch.isfinite(nll).all():
                raise FloatingPointError(f"non-finite NLL with attention {name!r}")
            out["nll"][wi] = float(nll.double().sum())
            out["tokens"][wi] = nll.numel()
        return out


class PrefillBench:
    """Prompts processed in one causal forward each, with the attention function under test in every
    row and layer; `nll` scores every next-token prediction of the prompt (`attnlib.evaluate.perplexity`).

    windows: token-id lists of one length T >= 2; tokens 1 .. T-1 are scored (T - 1 per window)."""

    def __init__(self, rm, windows):
        if rm.kind != "decoder":
            raise ValueError("prefill quality needs a decoder model")
        lengths = {len(w) for w in windows}
        if len(lengths) != 1 or min(lengths) < 2:
            raise ValueError(f"windows must share one length >= 2; got lengths {sorted(lengths)}")
        self.rm, self.windows = rm, [list(w) for w in windows]

    def nll(self, fn=None, name: str = "exact") -> dict:
        """dict(nll=(W,) summed nats, tokens=(W,)) with ``fn`` (None = the model's own attention) in every layer."""
        from ..evaluate import perplexity

        try:
            res = perplexity(self.rm, self.windows, attn_fn=None if fn is None else causal_fallback(fn), batch_size=1,
                             progress=False)
        except FloatingPointError as err:
            raise FloatingPointError(f"non-finite NLL with attention {name!r}") from err
        return dict(nll=np.asarray(res.window_nll, dtype=np.float64), tokens=np.asarray(res.window_tokens, dtype=np.float64))
