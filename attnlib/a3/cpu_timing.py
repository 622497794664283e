"""The CPU baseline's timing, self-contained (numpy, ctypes and threadpoolctl only, no package imports) so
that it also runs as a script in a separate process (`measure_cpu_processes` in `attnlib.a3.hardware`).

Three ways to run exact attention for a stream of queries against one key matrix (float32):

- ``single``:   one numpy call chain per query (`cpu_exact_single`): what a Python program does one query at a
                time; mostly interpreter and call overhead at bAbI's memory sizes;
- ``batched``:  every query of the key matrix in one numpy call chain (`cpu_exact_batched`): the CPU's best use;
- ``compiled``: a C kernel (gcc -O3 -march=native -ffast-math, built once and cached) that handles each query
                on its own (scores, max, exp, sum, weighted sum), called once for the stream: a compiled
                per-query kernel without interpreter overhead and without batching across queries.

The idle check: /proc/stat's busy time of the whole machine (user + nice + system + irq + softirq) over the
timing window, minus this process's own CPU time (os.times), as a fraction of the machine's CPU time in the
window; the window starts with a short sleep so that the check sees the machine before the timing too.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("single", "batched", "compiled")

C_SOURCE = r"""
#include <math.h>
/* exact attention, one query at a time: out[t] = softmax(scale * K q_t) V, t = 0..nq-1 */
void attn_per_query(const float *Q, int nq, const float *K, const float *V, int n, int d, int dv, float scale,
                    float *out, float *s) {
    for (int t = 0; t < nq; t++) {
        const float *q = Q + (long)t * d;
        float mx = -INFINITY;
        for (int i = 0; i < n; i++) {
            const float *k = K + (long)i * d;
            float acc = 0.0f;
            for (int j = 0; j < d; j++) acc += q[j] * k[j];
            acc *= scale;
            s[i] = acc;
            if (acc > mx) mx = acc;
        }
        float sum = 0.0f;
        for (int i = 0; i < n; i++) { s[i] = expf(s[i] - mx); sum += s[i]; }
        float *o = out + (long)t * dv;
        for (int j = 0; j < dv; j++) o[j] = 0.0f;
        for (int i = 0; i < n; i++) {
            const float w = s[i] / sum;
            const float *v = V + (long)i * dv;
            for (int j = 0; j < dv; j++) o[j] += w * v[j];
        }
    }
}
"""
C_FLAGS = ("-O3", "-march=native", "-ffast-math", "-shared", "-fPIC")


def cpu_exact_single(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Exact attention for ONE query (d,) in numpy: the kernel timed as the one-query-at-a-time CPU."""
    s = (k @ q) * scale
    e = np.exp(s - s.max())
    return (e / e.sum()) @ v


def cpu_exact_batched(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Exact attention for a batch of queries (Q, d) against one key matrix in numpy."""
    s = (q @ k.T) * scale
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)) @ v


def build_kernel(folder) -> Path | None:
    """The compiled per-query kernel as a shared library under ``folder`` (built once, keyed by the source
    and flags); None when no C compiler is available."""
    tag = hashlib.sha256((C_SOURCE + " ".join(C_FLAGS)).encode()).hexdigest()[:16]
    lib = Path(folder) / f"attn_per_query-{tag}.so"
    if lib.exists():
        return lib
    src = lib.with_suffix(".c")
    src.write_text(C_SOURCE)
    tmp = lib.with_name(lib.name + f".{os.getpid()}.tmp")
    try:
        subprocess.run(["cc", *C_FLAGS, "-o", str(tmp), str(src), "-lm"], check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    os.replace(tmp, lib)
    return lib


class CompiledKernel:
    """ctypes wrapper of the compiled per-query kernel (`build_kernel`)."""

    def __init__(self, lib_path):
        self.lib = ctypes.CDLL(str(lib_path))
        f = self.lib.attn_per_query
        P = ctypes.POINTER(ctypes.c_float)
        f.argtypes = [P, ctypes.c_int, P, P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float, P, P]
        f.restype = None
        self.f, self.P = f, P

    def prepare(self, q, k, v):
        """Contiguous float32 buffers and the output / score buffers for one stream (allocated once)."""
        q, k, v = (np.ascontiguousarray(x, dtype=np.float32) for x in (q, k, v))
        out = np.zeros((q.shape[0], v.shape[1]), np.float32)
        s = np.zeros(k.shape[0], np.float32)
        ptr = lambda a: a.ctypes.data_as(self.P)  # noqa: E731
        args = (ptr(q), q.shape[0], ptr(k), ptr(v), k.shape[0], k.shape[1], v.shape[1])
        return (args, ptr(out), ptr(s)), out, (q, k, v, s)

    def run(self, prepared, scale: float):
        (args, po, ps), out, _keep = prepared
        self.f(*args, ctypes.c_float(scale), po, ps)
        return out


def cpu_busy_snapshot() -> dict:
    """/proc/stat's busy and total jiffies of the whole machine, this process's CPU seconds and the time;
    busy/total are None where /proc/stat is not readable."""
    busy = total = None
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6]
        total = sum(vals[:8])
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return dict(busy=busy, total=total, self_s=t.user + t.system, wall=time.perf_counter())


def others_busy(before: dict, after: dict) -> float:
    """Fraction of the machine's CPU time (all CPUs) used by OTHER processes between two snapshots:
    (machine busy - this process's CPU time) / machine total; NaN where /proc/stat was not readable."""
    if before["busy"] is None or after["busy"] is None:
        return float("nan")
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = after["total"] - before["total"]
    if total <= 0:
        return float("nan")
    own = (after["self_s"] - before["self_s"]) * hz
    return float(max(0.0, (after["busy"] - before["busy"]) - own) / total)


def time_modes(q, k, v, *, repeats: int, thread_counts=(1, None), lib_path=None, settle_s: float = 0.3) -> dict:
    """Time exact attention of every query of ``q`` against (k, v) in each mode (`MODES`; compiled only with
    ``lib_path``), for each BLAS thread limit, repetitions interleaved. Returns {"runs": {threads: {mode:
    [s/query per repetition]}}, "others_busy": fraction, "window_s": seconds} (the idle check's window
    starts ``settle_s`` before the first timing)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    q, k, v = (np.ascontiguousarray(x, dtype=np.float32) for x in (q, k, v))
    scale = 1.0 / float(np.sqrt(q.shape[-1]))
    kern = CompiledKernel(lib_path) if lib_path else None
    prep = kern.prepare(q, k, v) if kern else None
    snap0 = cpu_busy_snapshot()
    time.sleep(settle_s)
    runs = {}
    for limit in thread_counts:
        with threadpool_limits(limits=limit):
            used = max([int(p.get("num_threads", 1)) for p in threadpool_info()] or [1])
            cpu_exact_batched(q, k, v, scale)  # warm-up
            if kern:
                kern.run(prep, scale)
            r = {m: [] for m in MODES if m != "compiled" or kern}
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i in range(q.shape[0]):
                    cpu_exact_single(q[i], k, v, scale)
                r["single"].append((time.perf_counter() - t0) / q.shape[0])
                t0 = time.perf_counter()
                cpu_exact_batched(q, k, v, scale)
                r["batched"].append((time.perf_counter() - t0) / q.shape[0])
                if kern:
                    t0 = time.perf_counter()
                    kern.run(prep, scale)
                    r["compiled"].append((time.perf_counter() - t0) / q.shape[0])
            runs[used] = r
    snap1 = cpu_busy_snapshot()
    return dict(runs=runs, others_busy=others_busy(snap0, snap1), window_s=snap1["wall"] - snap0["wall"])


def _main(argv):
    """Child process: python cpu_timing.py in.npz out.json repeats lib_path|- threads,..."""
    src, dst, repeats, lib, threads = argv
    z = np.load(src)
    tc = tuple(None if t == "default" else int(t) for t in threads.split(","))
    res = time_modes(z["q"], z["k"], z["v"], repeats=int(repeats), thread_counts=tc, lib_path=None if lib == "-" else lib)
    res["runs"] = {str(t): r for t, r in res["runs"].items()}
    Path(dst).write_text(json.dumps(res))


if __name__ == "__main__":
    _main(sys.argv[1:])
