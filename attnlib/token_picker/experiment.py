"""Token-Picker experiment helpers: real-model hooks, long real-text windows, the statistics pass on
the exact model, pruned-model perplexity runs sharing one prefill, and the aggregation conventions.

* `book_windows`: windows of real text as long as 8K tokens, cut from CONSECUTIVE chapters of one
  Austen novel joined with a blank line (a chapter alone is ~2K tokens), one window per novel in turn.
* `stats_pass`: the model runs with EXACT attention (a fused kernel, layer by layer: no T x T matrix
  is kept) on one window at a time; in every layer, for chosen query rows (decode steps), Token-Picker
  counts are computed for many thresholds and estimator variants on the model's own tensors.
  A row at position t of a window is the decode step with t + 1 cached tokens, so one 8K window gives
  decode steps at 1K, 2K, 4K and 8K context (their prefixes are the shorter contexts' windows).
* `quality_runs`: the model runs WITH Token-Picker in every layer on the last decode rows of each
  window; the prompt (prefill) is computed once, exactly, and its KV cache reused for every threshold.
* `window_ratio`, `ratio_interval`: pruning ratio and traffic ratios under the two averaging
  conventions, per window, with a bootstrap interval over windows (`attnlib.stats`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .estimator import PickerConfig, token_pick

__all__ = ["StatsCollector", "make_attn_fn", "make_stats_fn", "cached", "token_nll", "book_windows",
           "stats_pass", "cached_stats", "quality_runs", "layer_counts", "window_ratio", "ratio_interval", "interpolate_threshold",
           "CONVENTIONS"]

CONVENTIONS = ("ratio of sums", "mean of ratios")


# ----------------------------------------------------------------------------- real-model hooks
class StatsCollector:
    """Per-layer counts gathered while a real model runs (one entry per forward call and threshold).

    ``arrays()`` -> {layer: {field: array (calls, n_thresholds, B, heads, rows)}}.
    """

    FIELDS = ("n_context", "n_kept", "key_chunks", "n_full", "pruned_mass", "n_oracle", "kv_key_chunks",
              "kv_n_full", "kv_n_values")

    def __init__(self):
        self.layers: dict[int, dict[str, list[np.ndarray]]] = {}

    def add(self, layer: int, results) -> None:
        results = results if isinstance(results, (list, tuple)) else [results]
        slot = self.layers.setdefault(int(layer), {f: [] for f in self.FIELDS})
        for f in self.FIELDS:
            slot[f].append(np.stack([getattr(r, f).numpy() for r in results]))

    def arrays(self) -> dict[int, dict[str, np.ndarray]]:
        return {layer: {f: np.stack(v) for f, v in slot.items()} for layer, slot in sorted(self.layers.items())}


def _rows_mask(mask, rows):
    if mask is None:
        return None
    return mask if mask.shape[-2] == 1 else mask[..., rows, :]


def make_attn_fn(cfg: PickerConfig, *, kv_groups: int = 1, decode_from: int = 0, tile: int = 1,
                 collector: StatsCollector | None = None):
    """An AttnFn ``(q, k, v, mask, scale, layer) -> out`` running Token-Picker inside a real model.

    Query rows >= ``decode_from`` (the generated tokens, positions counted in the whole sequence) use
    Token-Picker, each against its own causal prefix; earlier rows (the prompt, processed densely in a
    prefill pass) use exact attention. ``mask`` is the model's additive mask; with ``mask=None`` and
    Tq > 1 the causal mask is applied. Works with a KV cache (Tk > Tq: the rows are the last Tq positions).
    """
    def attn_fn(q, k, v, mask, scale, layer):
        Tq, Tk = q.shape[-2], k.shape[-2]
        start = min(max(int(decode_from) - (Tk - Tq), 0), Tq)  # first row that is a decode step
        causal = mask is None and Tq > 1
        if causal:
            mask = torch.as_tensor(np.where(np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq), 0.0, -np.inf),
                                   dtype=q.dtype)
        out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=torch.float64)
        if start > 0:  # prefill rows: exact attention in the model's own precision (fused kernel)
            m = _rows_mask(mask, slice(0, start))
            out[..., :start, :] = torch.nn.functional.scaled_dot_product_attention(
                q[..., :start, :], k, v, attn_mask=None if m is None else m.to(q.dtype), scale=scale).double()
        if start < Tq and cfg.threshold == 0 and collector is None:  # nothing pruned: dense, quantised K/V
            out[..., start:, :] = _dense_quantised(q[..., start:, :], k, v, cfg, scale,
                                                   None if mask is None else _rows_mask(mask, slice(start, Tq)))
        elif start < Tq:
            res = token_pick(q[..., start:, :].detach().cpu(), k.detach().cpu(), v.detach().cpu(), cfg,
                             mask=None if mask is None else _rows_mask(mask, slice(start, Tq)).detach().cpu(),
                             scale=scale, kv_groups=kv_groups, tile=tile)
            out[..., start:, :] = res.out
            if collector is not None:
                collector.add(layer, res)
        return out.to(dtype=q.dtype, device=q.device)

    return attn_fn


def _dense_quantised(q, k, v, cfg: PickerConfig, scale: float, mask) -> torch.Tensor:
    """Exact attention (float64) with the keys and values quantised as Token-Picker stores them: the
    threshold-0 output of `token_pick`, without its bookkeeping."""
    from .estimator import quantize

    k_int, k_step = quantize(k.detach().cpu(), cfg.k_bits)
    v_int, v_step = quantize(v.detach().cpu(), cfg.v_bits)
    m = None
    if mask is not None:
        m = mask.detach().cpu().to(torch.float64)
        m = torch.where(m <= -1e4, torch.tensor(-math.inf, dtype=torch.float64), m)
    return torch.nn.functional.scaled_dot_product_attention(q.detach().cpu().double(), k_int * k_step, v_int * v_step,
                                                            attn_mask=m, scale=scale)


def _as_spec(spec, rows):
    """A stats spec as a dict: cfg, thresholds, tile, collector, rows (positions, default: all rows)."""
    if isinstance(spec, dict):
        d = dict(spec)
    else:
        cfg, thresholds, tile, collector = spec
        d = dict(cfg=cfg, thresholds=thresholds, tile=tile, collector=collector)
    d.setdefault("tile", 1)
    d["rows"] = np.asarray(rows if d.get("rows") is None else d["rows"], dtype=np.int64)
    if not set(d["rows"].tolist()) <= set(np.asarray(rows).tolist()):
        raise ValueError("a spec's rows must be a subset of the stats rows")
    return d


def _row_blocks(rows, offset: int):
    """Consecutive runs of ``rows`` (positions) whose causal prefixes have similar lengths, each with the
    number of keys it needs: (row tensor, n_keys). A block ends where the next row's prefix is more than
    1.5 times as long as the block's first one, so short-context rows never pay for the longest context."""
    rows = np.asarray(rows, dtype=np.int64)
    blocks, start = [], 0
    for j in range(1, len(rows) + 1):
        if j == len(rows) or rows[j] + 1 > 1.5 * (rows[start] + 1) or rows[j] < rows[j - 1]:
            blk = rows[start:j]
            blocks.append((torch.as_tensor(blk), int(blk.max()) + 1 + offset))
            start = j
    return blocks


def _concat_rows(results):
    """Join the per-block results of `token_pick` (lists over thresholds) along the row axis."""
    if len(results) == 1:
        return results[0]
    from .estimator import PickResult

    fields = ("n_context", "n_kept", "key_chunks", "n_full", "pruned_mass", "n_oracle", "kv_key_chunks",
              "kv_n_full", "kv_n_values")
    return [PickResult(out=None, **{f: torch.cat([getattr(blk[li], f) for blk in results], dim=-1) for f in fields})
            for li in range(len(results[0]))]


def make_stats_fn(specs, rows, *, kv_groups: int = 1, causal: bool = False):
    """An AttnFn that computes EXACT attention (the model runs unchanged; a fused kernel, so no T x T
    matrix is stored) and, on the side, Token-Picker counts on the query rows ``rows`` (positions, i.e.
    decode steps) of every layer, for every spec: a dict (cfg, thresholds, collector, tile=1, rows=a
    subset of ``rows``) or a tuple (cfg, thresholds, tile, collector). Many thresholds and variants
    from ONE forward pass (statistics on the exact model's own tensors). ``causal=True`` (unpadded
    sequences only) ignores the model's mask and uses the causal kernel (about twice as fast on long
    inputs); the Token-Picker rows then get the causal mask of their positions."""
    rows = np.asarray(rows, dtype=np.int64)
    specs = [_as_spec(s, rows) for s in specs]

    def causal_rows(r, Tq, Tk):
        return torch.where(torch.arange(Tk)[None, :] <= r[:, None] + (Tk - Tq), 0.0, -math.inf)[None, None]

    def attn_fn(q, k, v, mask, scale, layer):
        Tq, Tk = q.shape[-2], k.shape[-2]
        if causal or mask is None:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=Tq > 1, scale=scale) \
                if Tq == Tk else torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=causal_rows(torch.arange(Tq), Tq, Tk).to(q.dtype), scale=scale)
        else:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=scale)
        for sp in specs:
            if causal or mask is None:  # causal rows only see keys up to their position: slice the keys
                results = [token_pick(q[..., r, :], k[..., :n, :], v[..., :n, :], sp["cfg"],
                                      mask=causal_rows(r, Tq, Tk)[..., :n], scale=scale, kv_groups=kv_groups,
                                      tile=sp["tile"], thresholds=list(sp["thresholds"]), compute_output=False)
                           for r, n in _row_blocks(sp["rows"], Tk - Tq)]
                sp["collector"].add(layer, _concat_rows(results))
                continue
            r = torch.as_tensor(sp["rows"])
            m = mask if mask.shape[-2] == 1 else mask[..., r, :]
            res = token_pick(q[..., r, :], k, v, sp["cfg"], mask=m, scale=scale, kv_groups=kv_groups,
                             tile=sp["tile"], thresholds=list(sp["thresholds"]), compute_output=False)
            sp["collector"].add(layer, res)
        return out

    return attn_fn


def cached(name: str, key: dict, compute):
    """``compute()`` (nested dicts / lists of numpy arrays and numbers) cached under
    cache_dir("token_picker") by ``key``; stored without pickle (see attnlib.cache)."""
    from ..cache import cached as _cached

    return _cached("token_picker", name, key, compute)


def token_nll(rm, windows, attn_fn=None) -> np.ndarray:
    """Per-token NLL (nats), (n_windows, T-1): entry t scores token t+1 from tokens 0..t (teacher
    forcing through `attnlib.models.logits`, all windows (equal lengths) in one batch)."""
    from ..models import logits

    ids = torch.tensor(windows, dtype=torch.long)
    out = logits(rm, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, attn_fn=attn_fn)
    logp = torch.log_softmax(out[:, :-1].float(), dim=-1)
    return (-logp.gather(-1, ids[:, 1:, None]).squeeze(-1)).double().numpy()


# ----------------------------------------------------------------------------- real text, long windows
def book_windows(rm, records, window: int, n_windows: int) -> tuple[list[list[int]], list[str]]:
    """``n_windows`` token windows of exactly ``window`` tokens of running text, and the book of each.

    records: dicts with "book", "chapter", "text" (`attnlib.data.load_records("austen")`). The chapters
    of each book are joined in chapter order (blank line between chapters) and cut into consecutive
    non-overlapping windows; windows are taken one book at a time in turn (book order as in the data:
    first window of every book, then the second of every book, ...), so few windows come from few
    different texts. With ``rm.add_bos`` a window is BOS followed by window-1 text tokens.
    """
    if rm.kind != "decoder":
        raise ValueError("book_windows needs a decoder model")
    if int(window) != window or window < 2 or window > rm.max_positions:
        raise ValueError(f"window must be an integer in [2, {rm.max_positions}], got {window}")
    if int(n_windows) != n_windows or n_windows < 1:
        raise ValueError(f"n_windows must be a positive integer, got {n_windows}")
    books: dict[str, list] = {}
    for r in records:
        if not {"book", "chapter", "text"} <= set(r):
            raise ValueError("records need 'book', 'chapter' and 'text' fields")
        books.setdefault(r["book"], []).append(r)
    body = window - 1 if rm.add_bos else window
    prefix = [rm.bos_token_id] if rm.add_bos else []
    per_book = []
    for name, chapters in books.items():
        text = "\n\n".join(c["text"] for c in sorted(chapters, key=lambda c: c["chapter"]))
        ids = rm.tokenizer(text, add_special_tokens=False)["input_ids"]
        per_book.append([(name, prefix + ids[s:s + body]) for s in range(0, len(ids) - body + 1, body)])
    out = []
    for i in range(max((len(b) for b in per_book), default=0)):
        out += [b[i] for b in per_book if i < len(b)]
    if len(out) < n_windows:
        raise ValueError(f"the books hold only {len(out)} windows of {window} tokens, {n_windows} requested")
    out = out[:n_windows]
    return [w for _, w in out], [n for n, _ in out]


# ----------------------------------------------------------------------------- model passes
def stats_pass(rm, windows, rows, specs, *, progress: bool = True) -> list[dict]:
    """Token-Picker counts on the EXACT model: for every window (one forward pass each, batch 1, no
    logits), every layer and every spec, at the query positions ``rows``.

    specs: dicts (cfg, thresholds, rows=subset of ``rows`` or None, tile=1); returns, per spec,
    {layer: {field: array (windows, n_thresholds, heads, spec rows)}}.
    """
    from tqdm.auto import tqdm

    from ..models import replaced_attention

    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0:
        raise ValueError("rows must be a non-empty list of non-negative positions")
    lengths = {len(w) for w in windows}
    if len(lengths) != 1 or rows.max() >= min(lengths):
        raise ValueError(f"windows must share one length larger than every row; got lengths {sorted(lengths)}")
    G = rm.n_heads // rm.n_kv_heads
    specs = [dict(s) for s in specs]
    collectors = [StatsCollector() for _ in specs]
    fn = make_stats_fn([dict(s, collector=c) for s, c in zip(specs, collectors)], rows, kv_groups=G, causal=True)
    for w in tqdm(windows, desc="stats pass (windows)", disable=not progress, leave=False):
        ids = torch.tensor([w], dtype=torch.long, device=rm.device)
        with torch.no_grad(), replaced_attention(rm, fn):
            rm.model.model(input_ids=ids, use_cache=False)
    return [{layer: {f: a[:, :, 0] for f, a in arrs.items()} for layer, arrs in c.arrays().items()}
            for c in collectors]


def cached_stats(rm, windows, rows, specs, *, progress: bool = True, return_seconds: bool = False):
    """`stats_pass` cached by its inputs (model, windows, rows, each spec's cfg / thresholds / rows /
    tile), one cache entry per window so a larger set of windows reuses the smaller one's. With
    ``return_seconds`` also the compute time the entries took when they were filled (s, summed)."""
    import time

    def timed(w):
        t0 = time.perf_counter()
        res = stats_pass(rm, [w], rows, specs, progress=False)
        return dict(res=res, seconds=time.perf_counter() - t0)

    out, seconds = None, 0.0
    for w in windows:
        key = dict(model=rm.name, window=[int(t) for t in w], rows=[int(r) for r in rows],
                   specs=[dict(cfg=repr(s["cfg"]), thresholds=[float(t) for t in s["thresholds"]],
                               rows=None if s.get("rows") is None else [int(r) for r in s["rows"]],
                               tile=int(s.get("tile", 1))) for s in specs])
        entry = cached("stats", key, lambda w=w: timed(w))
        res, seconds = entry["res"], seconds + float(entry["seconds"])
        if out is None:
            out = [[r] for r in res]
        else:
            for acc, r in zip(out, res):
                acc.append(r)
        if progress:
            print(".", end="", flush=True)
    if progress:
        print()
    res = [{layer: {f: np.concatenate([r[layer][f] for r in per_spec]) for f in per_spec[0][layer]}
            for layer in per_spec[0]} for per_spec in out]
    return (res, seconds) if return_seconds else res


def quality_runs(rm, windows, prefill: int, cfg: PickerConfig, thresholds, *, key: dict | None = None,
                 progress: bool = True) -> dict:
    """Teacher-forced NLL of the decode tokens with Token-Picker in every layer, for several thresholds.

    windows (W, T) all of one length; positions ``prefill .. T-2`` are decode steps (each against its
    own causal prefix, in every layer), scoring tokens ``prefill+1 .. T-1``. The prompt
    0..prefill-1 runs ONCE with exact attention and its KV cache is reused for every threshold.
    thresholds: None = exact fp32 attention, 0.0 = dense attention with the quantised K/V, t > 0 =
    Token-Picker at threshold t. Each result is cached by its inputs (``key`` adds to the key).
    Returns {threshold: dict(nll=(W, T-1-prefill), stats={layer: {field: (W, heads, rows)}} or None,
    seconds=compute time when the entry was filled, prompt pass included for the first)}.
    """
    import time

    from ..models import exact_prefix_cache, tail_nll

    ids = torch.tensor(windows, dtype=torch.long, device=rm.device)
    if ids.ndim != 2 or not 1 <= prefill <= ids.shape[1] - 2:
        raise ValueError(f"windows must be (W, T) with 1 <= prefill <= T - 2, got {tuple(ids.shape)}, prefill {prefill}")
    G = rm.n_heads // rm.n_kv_heads
    base_key = dict(model=rm.name, windows=[list(map(int, w)) for w in windows], prefill=int(prefill), **(key or {}))
    state = {}

    def prefix_cache():
        if "past" not in state:
            state["past"] = exact_prefix_cache(rm, ids, prefill)
        return state["past"]

    results = {}
    for t in thresholds:
        c = None if t is None else PickerConfig(**{**cfg.__dict__, "threshold": float(t)})

        def compute(c=c):
            t0 = time.perf_counter()
            past = prefix_cache()
            col = StatsCollector()
            fn = None if c is None else make_attn_fn(c, kv_groups=G, decode_from=0, collector=col)
            nll = tail_nll(rm, ids, prefill, past, fn).double().numpy()
            st = None if c is None else {layer: {f: a[0, 0] for f, a in arrs.items()}
                                         for layer, arrs in col.arrays().items()}
            return dict(nll=nll, stats=st, seconds=time.perf_counter() - t0)

        results[t] = cached("quality", dict(base_key, cfg=None if c is None else repr(c)), compute)
    return results


# ----------------------------------------------------------------------------- aggregation
def layer_counts(arrays: dict, ti: int | None = 0) -> dict:
    """{field: array (windows, layers, heads, rows)} from per-layer arrays of `stats_pass`
    ((windows, n_thresholds, heads, rows); ``ti`` picks the threshold) or of `quality_runs`
    ((windows, heads, rows); ``ti=None``)."""
    layers = sorted(arrays)
    fields = arrays[layers[0]].keys()
    pick = (lambda a: a) if ti is None else (lambda a: a[:, ti])
    return {f: np.stack([pick(arrays[layer][f]) for layer in layers], axis=1) for f in fields}


def window_ratio(num, den, convention: str = "ratio of sums") -> np.ndarray:
    """Per-window ratio of ``num`` to ``den`` (arrays (windows, ...)): "ratio of sums" (sum over every
    other axis, then divide) or "mean of ratios" (divide per entry, e.g. per layer x head x decode
    step, then the arithmetic mean)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim < 1:
        raise ValueError(f"num and den must share one shape (windows, ...), got {num.shape} and {den.shape}")
    axes = tuple(range(1, num.ndim))
    if convention == "ratio of sums":
        return num.sum(axis=axes) / np.maximum(den.sum(axis=axes), 1e-300)
    if convention == "mean of ratios":
        return (num / np.maximum(den, 1e-300)).mean(axis=axes)
    raise ValueError(f"unknown averaging convention {convention!r}; known: {', '.join(CONVENTIONS)}")


def ratio_interval(num, den, convention: str = "ratio of sums"):
    """(value, `attnlib.stats.Interval`) of the pooled ratio over windows, bootstrap over windows:
    "ratio of sums" pools sum(num) / sum(den) over all windows; "mean of ratios" averages the
    per-entry ratios over all windows (equal entries per window)."""
    from .. import stats

    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim < 1:
        raise ValueError(f"num and den must share one shape (windows, ...), got {num.shape} and {den.shape}")
    axes = tuple(range(1, num.ndim))
    if convention == "ratio of sums":
        units = np.stack([num.sum(axis=axes), den.sum(axis=axes)], axis=1)
        stat = lambda u: u[..., 0].sum(-1) / u[..., 1].sum(-1)  # noqa: E731
    elif convention == "mean of ratios":
        units = window_ratio(num, den, convention)
        stat = None
    else:
        raise ValueError(f"unknown averaging convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    return stats.bootstrap(units, stat, method=f"bootstrap over text windows ({convention})")


def interpolate_threshold(thresholds, values, target: float) -> float | None:
    """The threshold at which ``values`` (increasing with the threshold) reaches ``target``, by linear
    interpolation in log(threshold) / log(value); None when the target lies outside the values."""
    t = np.log(np.asarray(thresholds, dtype=np.float64))
    v = np.log(np.asarray(values, dtype=np.float64))
    if len(t) != len(v) or len(t) < 2:
        raise ValueError("need at least two (threshold, value) pairs of equal length")
    order = np.argsort(t)
    t, v = t[order], np.maximum.accumulate(v[order])
    lt = math.log(target)
    if lt < v[0] or lt > v[-1]:
        return None
    i = int(np.searchsorted(v, lt))
    if i == 0 or v[i] == v[i - 1]:
        return float(np.exp(t[i]))
    f = (lt - v[i - 1]) / (v[i] - v[i - 1])
    return float(np.exp(t[i - 1] + f * (t[i] - t[i - 1])))
