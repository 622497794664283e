"""Throughput of the Token-Picker estimators, in (query head x cached token) pairs per second.

"before": the sequential estimator (`token_pick` with estimator="sequential": vectorised over rows,
a Python loop over the tokens of the scan), the implementation the notebook used before issue 13.
"after": the paper's out-of-order estimator (estimator="paper": vectorised over rows AND tokens).
Also the readable per-token reference (`pick_reference_paper`) on one row, for scale.

Inputs: SmolLM2-135M-shaped tensors (9 query heads, 3 KV heads, d_head 64) with seeded random
values, or with --real the Q/K/V of one SmolLM2 layer on real Austen text (needs the model).

    .venv/bin/python scripts/bench_token_picker.py --context 4096 --rows 8
    .venv/bin/python scripts/bench_token_picker.py --stats-pass 4096   # a whole statistics pass, 30 layers

--stats-pass N times `token_picker.stats_pass` on one real N-token Austen window: the exact SmolLM2
forward (fused causal kernel) plus the paper estimator at --rows decode steps of every layer, for all
--thresholds at once (no cache).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from attnlib import token_picker as tp


def inputs(context: int, rows: int, real: bool, seed: int = 0):
    if real:
        from attnlib import data, models

        rm = models.load_decoder("smollm2")
        wins, _ = tp.book_windows(rm, data.load_records("austen"), context, 1)
        cap = models.capture(rm, {"input_ids": torch.tensor(wins)}, layers=[14])[0]
        pos = np.arange(context - rows, context)
        return (cap.q[:, :, pos].double(), cap.k.double(), cap.v.double(), cap.mask[:, :, pos], cap.scale,
                rm.n_heads // rm.n_kv_heads)
    g = torch.Generator().manual_seed(seed)
    H, Hkv, d = 9, 3, 64
    q = torch.randn(1, H, rows, d, generator=g, dtype=torch.float64) * 2
    k = torch.randn(1, Hkv, context, d, generator=g, dtype=torch.float64).repeat_interleave(H // Hkv, 1)
    k[:, :, 0] *= 4  # a sink-like first token
    v = torch.randn(1, Hkv, context, d, generator=g, dtype=torch.float64).repeat_interleave(H // Hkv, 1)
    pos = torch.arange(context - rows, context)
    mask = torch.where(torch.arange(context)[None, :] <= pos[:, None], 0.0, float("-inf"))[None, None]
    return q, k, v, mask, 1 / 8, H // Hkv


def bench(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=8, help="decode steps (query rows) per call")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[1e-3])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real", action="store_true", help="one SmolLM2 layer on real text instead of random tensors")
    ap.add_argument("--stats-pass", type=int, default=0, metavar="N", help="time a whole statistics pass on an N-token window")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stats_pass:
        from attnlib import data, models

        rm = models.load_decoder("smollm2")
        wins, _ = tp.book_windows(rm, data.load_records("austen"), args.stats_pass, 1)
        rows = args.stats_pass - 1 - 32 * np.arange(args.rows)[::-1]
        spec = dict(cfg=tp.PickerConfig(), thresholds=args.thresholds)
        t0 = time.perf_counter()
        tp.stats_pass(rm, wins, rows, [spec], progress=False)
        t = time.perf_counter() - t0
        print(f"statistics pass, one {args.stats_pass}-token window, {rm.n_layers} layers, {args.rows} decode rows, "
              f"{len(args.thresholds)} thresholds: {t:.1f} s ({args.threads} threads)")
        return
    q, k, v, mask, scale, G = inputs(args.context, args.rows, args.real)
    pairs = q.shape[1] * args.rows * args.context
    print(f"context {args.context}, {args.rows} decode rows x {q.shape[1]} heads, thresholds {args.thresholds}, "
          f"{'real SmolLM2 layer 14' if args.real else 'random SmolLM2-shaped'} tensors, {args.threads} threads")
    rows = []
    for name, est in (("before: sequential estimator (loop over tokens)", "sequential"),
                      ("after: paper estimator (vectorised over tokens)", "paper")):
        cfg = tp.PickerConfig(estimator=est)
        t = bench(lambda: tp.token_pick(q, k, v, cfg, mask=mask, scale=scale, kv_groups=G,
                                        thresholds=args.thresholds, compute_output=False), args.repeats)
        rows.append((name, t, pairs / t))
    cfg = tp.PickerConfig(threshold=args.thresholds[0])
    t_ref = bench(lambda: tp.pick_reference_paper(q[0, 0, -1], k[0, 0], v[0, 0], cfg, scale=scale), 1)
    rows.append(("readable reference (one row, one head)", t_ref, args.context / t_ref))
    for name, t, rate in rows:
        print(f"{name:52s} {t * 1e3:10.1f} ms  {rate:14,.0f} head-token pairs/s")
    print(f"speed-up after/before: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
