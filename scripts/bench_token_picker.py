"""Throughput of the Token-Picker estimators, in (query head x cached token) pairs per second.

Rows, per torch thread count (``--threads 1 2``): the paper's out-of-order estimator (estimator="paper",
vectorised over rows AND tokens: the one the notebook uses), the same code as it was BEFORE issue 25
(loaded from git revision ``--before``, default c195c12, timed interleaved with the current one so both
see the same load), and the sequential estimator (estimator="sequential": vectorised over rows, a
Python loop over the tokens of the scan). Also the readable per-token reference
(`pick_reference_paper`) on one row, for scale. Times are medians of ``--repeats`` runs after a
warm-up; the load average is printed before and after (the machine has 2 cores shared with other jobs).

Inputs: SmolLM2-135M-shaped tensors (9 query heads, 3 KV heads, d_head 64) with seeded random
values, or with --real the Q/K/V of one SmolLM2 layer on real Austen text (needs the model).

    .venv/bin/python scripts/bench_token_picker.py --context 4096 --rows 8
    .venv/bin/python scripts/bench_token_picker.py --stats-pass 4096   # a whole statistics pass, 30 layers

--stats-pass N times `token_picker.stats_pass` on one real N-token Austen window: the exact SmolLM2
forward (fused causal kernel) plus the paper estimator at --rows decode steps of every layer, for all
--thresholds at once (no cache).

Issue 25 target: the paper estimator at least 4x the one-thread throughput of c195c12 and no slowdown
with a second thread. Recorded (random inputs, 4K context x 8 rows, one threshold, medians; the load
average is the other jobs on the 2 cores):
  c195c12 (before)  1 thread 105 ms (load 0.6-0.7; 133-251 ms at load 2.6-4),
                    2 threads 77 ms (load 0.7-0.8; 750-1120 ms at load 2.6-4)
  this version      1 thread 25-41 ms wall, 25-29 ms CPU (load 2.6-4), 5.2-6.9x c195c12 in the same runs;
                    2 threads the same code on one thread: 27.9 vs 27.8 ms (40 repeats, load 3.8)
  8K context: 49 ms vs 501 ms; ten thresholds in one pass at 4K: 62 ms vs 321 ms (one thread, load 3.4).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def load_estimator_at(rev: str):
    """attnlib/token_picker/estimator.py as of git revision ``rev``, imported as its own module (its
    relative import of attnlib.threads made absolute), or None when git cannot give it."""
    root = Path(__file__).resolve().parents[1]
    try:
        src = subprocess.run(["git", "show", f"{rev}:attnlib/token_picker/estimator.py"], cwd=root, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    name = f"_token_picker_estimator_{rev}"
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(src.replace("from ..threads import", "from attnlib.threads import"))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def bench(fns: dict, repeats: int) -> dict:
    """Median wall and CPU (process) time of every function, {key: (wall s, cpu s)}; keys are (torch
    threads, name). Within each repeat the functions run in turn, in a fresh (seeded) random order, the
    thread count set before each, so a change of load hits them alike; one warm-up call each first. On
    a shared machine the wall time of a one-thread run grows with the other jobs' load while its CPU
    time stays near the work done."""
    def timed(key):
        torch.set_num_threads(key[0])
        t0, c0 = time.perf_counter(), time.process_time()
        fns[key]()
        return time.perf_counter() - t0, time.process_time() - c0

    for key in fns:
        timed(key)
    times = {key: [] for key in fns}
    rng = np.random.default_rng(0)
    keys = list(fns)
    for _ in range(repeats):
        for i in rng.permutation(len(keys)):
            times[keys[i]].append(timed(keys[i]))
    return {key: tuple(float(x) for x in np.median(np.array(t), axis=0)) for key, t in times.items()}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=8, help="decode steps (query rows) per call")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[1e-3])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    ap.add_argument("--before", default="c195c12", help="git revision of the 'before' estimator ('' = skip)")
    ap.add_argument("--no-sequential", action="store_true", help="skip the (slow) sequential estimator")
    ap.add_argument("--real", action="store_true", help="one SmolLM2 layer on real text instead of random tensors")
    ap.add_argument("--stats-pass", type=int, default=0, metavar="N", help="time a whole statistics pass on an N-token window")
    args = ap.parse_args(argv)
    if args.stats_pass:
        from attnlib import data, models

        torch.set_num_threads(args.threads[0])
        rm = models.load_decoder("smollm2")
        wins, _ = tp.book_windows(rm, data.load_records("austen"), args.stats_pass, 1)
        rows = args.stats_pass - 1 - 32 * np.arange(args.rows)[::-1]
        spec = dict(cfg=tp.PickerConfig(), thresholds=args.thresholds)
        t0 = time.perf_counter()
        tp.stats_pass(rm, wins, rows, [spec], progress=False)
        t = time.perf_counter() - t0
        print(f"statistics pass, one {args.stats_pass}-token window, {rm.n_layers} layers, {args.rows} decode rows, "
              f"{len(args.thresholds)} thresholds: {t:.1f} s ({args.threads[0]} threads, load {load()})")
        return
    q, k, v, mask, scale, G = inputs(args.context, args.rows, args.real)
    pairs = q.shape[1] * args.rows * args.context
    before = load_estimator_at(args.before) if args.before else None
    print(f"context {args.context}, {args.rows} decode rows x {q.shape[1]} heads, thresholds {args.thresholds}, "
          f"{'real SmolLM2 layer 14' if args.real else 'random SmolLM2-shaped'} tensors, {args.repeats} repeats "
          f"(median), {os.cpu_count()} CPUs")
    if args.before and before is None:
        print(f"(git revision {args.before!r} not available: no 'before' row)")

    def call(mod, estimator):
        cfg = mod.PickerConfig(estimator=estimator)
        return lambda: mod.token_pick(q, k, v, cfg, mask=mask, scale=scale, kv_groups=G,
                                      thresholds=args.thresholds, compute_output=False)

    now, old, seq = "paper estimator (this version)", f"paper estimator (before: {args.before})", \
        "sequential estimator (loop over tokens)"
    fns = {}
    for n in args.threads:
        fns[(n, now)] = call(tp, "paper")
        if before is not None:
            fns[(n, old)] = call(before, "paper")
    load0 = load()
    times = bench(fns, args.repeats)
    if not args.no_sequential:
        times.update(bench({(n, seq): call(tp, "sequential") for n in args.threads}, max(1, args.repeats // 3)))
    print(f"load average (1/5/15 min): {load0} before, {load()} after")
    print(f"{'threads':>7s}  {'estimator':44s} {'wall ms':>9s} {'CPU ms':>8s} {'head-token pairs/s':>19s}")
    for n in args.threads:
        for (m, name), (t, c) in times.items():
            if m == n:
                print(f"{n:7d}  {name:44s} {t * 1e3:9.1f} {c * 1e3:8.1f} {pairs / t:19,.0f}")
    cfg = tp.PickerConfig(threshold=args.thresholds[0])
    t_ref, c_ref = bench({(1, "ref"): lambda: tp.pick_reference_paper(q[0, 0, -1], k[0, 0], v[0, 0], cfg, scale=scale)},
                         1)[(1, "ref")]
    print(f"{'':7s}  {'readable reference (one row, one head)':44s} {t_ref * 1e3:9.1f} {c_ref * 1e3:8.1f} "
          f"{args.context / t_ref:19,.0f}")
    wall = {key: t for key, (t, _) in times.items()}
    for n in args.threads:
        if before is not None:
            print(f"{n} thread(s): this version has {wall[(n, old)] / wall[(n, now)]:.1f}x the throughput of "
                  f"{args.before} at {n} thread(s)" + (f", {wall[(1, old)] / wall[(n, now)]:.1f}x its one-thread "
                                                         f"throughput" if n != 1 and 1 in args.threads else ""))
    n0 = min(args.threads)
    for n in sorted(args.threads)[1:]:
        print(f"this version, {n} threads vs {n0}: {wall[(n0, now)] / wall[(n, now)]:.2f}x the throughput (wall)")


if __name__ == "__main__":
    main()
