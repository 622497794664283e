"""Timing the factors of R(h) in separate processes (issue 26).

Every cell (length L, batch B, torch threads) times four forward variants, interleaved, on the same
unpadded batches of real e-mails that fill L tokens:

* ``base``    the unmodified forward (eager attention, no lookup);
* ``hit``     the lean engine (`engine.LeanMemo`): key, search, warm load, every row a hit (the e-mails'
              own records are in the database: exact re-sends);
* ``miss``    the same lookup in full, every result rejected (what a miss costs);
* ``ceiling`` the hit path with the maps handed over (`engine.CeilingMemo`): no key, no search, no load;
* optionally ``sdpa`` (fused attention, no lookup) and ``miss_sdpa`` (a rejected lookup, fused attention):
  the stronger baseline (a hit skips attention either way, so ``hit`` and ``ceiling`` serve both).

`run_processes` runs the whole grid in ``n`` FRESH Python processes one after another (``python -m
attnlib.attmemo.bench spec.json out.json``), so the intervals can resample processes as well as
repetitions. Each process writes {cells: [{key, times, cpu, busy_other, ...}], ...}.

The idle check is `BusyMeter`: the share of ALL CPUs that other processes kept busy while a cell was
timed, from /proc/stat's busy jiffies minus this process's own CPU time (so a two-thread cell does not
count itself). A cell above ``max_busy`` is flagged.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["BusyMeter", "VARIANTS", "write_spec", "run_processes", "time_grid", "cell_key"]

VARIANTS = ("base", "hit", "miss", "ceiling")


def cell_key(L: int, B: int, threads: int) -> str:
    return f"L{int(L)}_B{int(B)}_T{int(threads)}"


def _proc_stat() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f), sum(f) - idle


class BusyMeter:
    """Share of all CPUs kept busy by OTHER processes between ``start()`` and ``stop()``: (machine busy
    jiffies - this process's CPU time) / machine total jiffies. NaN where /proc/stat cannot be read."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def start(self):
        try:
            self.t0, self.b0 = _proc_stat()
        except (OSError, ValueError, IndexError):
            self.t0 = None
        self.c0 = time.process_time()
        return self

    def stop(self) -> float:
        own = time.process_time() - self.c0
        if self.t0 is None:
            return float("nan")
        t1, b1 = _proc_stat()
        total = max(t1 - self.t0, 1)
        other = (b1 - self.b0) - own * self.hz
        return float(min(1.0, max(0.0, other / total)))


def write_spec(path, *, cells: list[dict], inputs: dict, index: dict, proj, n_chunks: int, store: dict,
               memo_layers=None, max_busy: float = 0.10, wait_s: float = 0.0) -> Path:
    """Write a bench spec: ``path``.json + ``path``.npz.

    cells: [{L, B, threads, reps, groups: [[row, ...], ...], variants (optional)}] (rows index ``inputs[L]``);
    inputs: {L: (ids (n, L) int64, entries (n,) int64)} -- every row fills L tokens (no padding);
    index: {L: dict(centre (C*D,), keys (N, dim) normalised, lengths (N,), entry_ids (N,), cos_min, backend)}
    (the database searched at that length, the timed inputs' own records among it); proj (C*D, dim): the
    key projection; store: {path, meta} of the `lookup.MapStore` holding every entry in ``inputs``."""
    path = Path(path)
    arrays = {"proj": np.asarray(proj, np.float32)}
    for L, (ids, ent) in inputs.items():
        ids = np.asarray(ids, np.int64)
        if ids.ndim != 2 or ids.shape[1] != int(L) or len(ent) != len(ids):
            raise ValueError(f"inputs at {L} tokens must be (n, {L}) token ids with one entry each, got {ids.shape}")
        if int(L) not in index:
            raise ValueError(f"no index for the inputs at {L} tokens")
        arrays[f"ids_{int(L)}"], arrays[f"ent_{int(L)}"] = ids, np.asarray(ent, np.int64)
    meta = {}
    for L, ix in index.items():
        for k in ("centre", "keys", "lengths", "entry_ids"):
            arrays[f"{k}_{int(L)}"] = np.asarray(ix[k], np.float32 if k in ("centre", "keys") else np.int64)
        meta[str(int(L))] = dict(cos_min=float(ix["cos_min"]), backend=str(ix["backend"]))
    for c in cells:
        if not {"L", "B", "threads", "reps", "groups"} <= set(c):
            raise ValueError(f"a cell needs L, B, threads, reps, groups; got {sorted(c)}")
        if f"ids_{int(c['L'])}" not in arrays or any(len(g) != c["B"] for g in c["groups"]) or c["reps"] < 1:
            raise ValueError(f"cell {cell_key(c['L'], c['B'], c['threads'])}: groups must hold B rows of known inputs")
    np.savez(path.with_suffix(".npz"), **arrays)
    spec = dict(cells=[dict(c, groups=[[int(i) for i in g] for g in c["groups"]]) for c in cells],
                n_chunks=int(n_chunks), index=meta, store=dict(store),
                memo_layers=None if memo_layers is None else [int(l) for l in memo_layers],
                max_busy=float(max_busy), wait_s=float(wait_s))
    path.with_suffix(".json").write_text(json.dumps(spec, indent=1, default=str))
    return path


def _load(spec_path):
    import torch

    from .. import models
    from .engine import LeanIndex, WarmMaps
    from .fastpath import FastEncoder
    from .lookup import MapStore
    from .perlayer import ChunkEmbedder, MemmapStore

    spec_path = Path(spec_path)
    spec = json.loads(spec_path.with_suffix(".json").read_text())
    arr = np.load(spec_path.with_suffix(".npz"))
    rm = models.load_encoder()
    fe = FastEncoder(rm)
    indexes = {}
    for L, m in spec["index"].items():
        emb = ChunkEmbedder(1, rm.d_model, spec["n_chunks"], arr["proj"].shape[1])
        emb.proj = torch.from_numpy(arr["proj"].copy())
        emb.centre[0] = torch.from_numpy(arr[f"centre_{L}"].copy())
        indexes[int(L)] = LeanIndex(emb, arr[f"keys_{L}"], arr[f"lengths_{L}"], arr[f"entry_ids_{L}"],
                                    cos_min=m["cos_min"], backend=m["backend"])
    store = MapStore(MemmapStore.open(spec["store"]["path"], meta=spec["store"]["meta"], verify=False))
    return spec, arr, fe, indexes, store, WarmMaps


def _wait_idle(wait_s: float, max_busy: float) -> None:
    """Sample the machine every 0.5 s until other processes keep at most ``max_busy`` busy (at most wait_s)."""
    end = time.monotonic() + float(wait_s or 0.0)
    while time.monotonic() < end:
        m = BusyMeter().start()
        time.sleep(0.5)
        if m.stop() <= max_busy:
            break


def time_grid(spec_path, *, log=print) -> dict:
    """Time every cell of a spec in THIS process (see the module docstring); returns the result dict."""
    import torch

    from ..threads import torch_threads
    from .engine import CeilingMemo, LeanMemo
    from .workload import time_variants

    t_start = time.perf_counter()
    spec, arr, fe, indexes, store, WarmMaps = _load(spec_path)
    entries = sorted({int(e) for k in arr.files if k.startswith("ent_") for e in arr[k]})
    maps = WarmMaps(store, fe.n_layers, entries)
    maps.touch()
    out = dict(pid=os.getpid(), cells=[], load_s=round(time.perf_counter() - t_start, 2))
    _wait_idle(spec.get("wait_s", 0.0), spec["max_busy"])   # before the first cell
    for c in spec["cells"]:
        L, B, th = int(c["L"]), int(c["B"]), int(c["threads"])
        ids, ent = torch.from_numpy(arr[f"ids_{L}"]), arr[f"ent_{L}"]
        batches = [dict(input_ids=ids[g], attention_mask=torch.ones(len(g), L, dtype=torch.long)) for g in c["groups"]]
        index = indexes[L]
        hit = LeanMemo(index, maps, spec["memo_layers"])
        miss = LeanMemo(index, maps, spec["memo_layers"], reject=True)
        ceil = {id(b): CeilingMemo(spec["memo_layers"]).set_rows([maps.maps(int(ent[i])) for i in g])
                for b, g in zip(batches, c["groups"])}
        fns = {"base": lambda b: fe.forward(b), "hit": lambda b: fe.forward(b, memo=hit),
               "miss": lambda b: fe.forward(b, memo=miss), "ceiling": lambda b: fe.forward(b, memo=ceil[id(b)]),
               "sdpa": lambda b: fe.forward(b, attn="sdpa"), "miss_sdpa": lambda b: fe.forward(b, memo=miss, attn="sdpa")}
        variants = tuple(c.get("variants") or VARIANTS)
        if not set(VARIANTS) <= set(variants) or not set(variants) <= set(fns):
            raise ValueError(f"cell {cell_key(L, B, th)}: variants must include {VARIANTS} and lie in {tuple(fns)}")
        fns = {v: fns[v] for v in variants}
        first_busy = None
        for attempt in (1, 2):   # a flagged cell is timed again once, after waiting for an idle machine
            meter = BusyMeter().start()
            t0 = time.perf_counter()
            with torch.no_grad(), torch_threads(th) as used:
                t = time_variants(fns, batches, int(c["reps"]))
            busy = meter.stop()
            if attempt == 2 or not (np.isfinite(busy) and busy > spec["max_busy"]):
                break
            first_busy = busy
            log(f"  [pid {os.getpid()}] {cell_key(L, B, th)}: other processes kept {busy:.0%} busy; timed again")
            _wait_idle(spec.get("wait_s", 0.0), spec["max_busy"])
        if hit.n_hits != hit.n_inputs or miss.n_hits:
            raise RuntimeError(f"cell {cell_key(L, B, th)}: the hit variant missed or the miss variant hit "
                               f"({hit.n_hits}/{hit.n_inputs}, {miss.n_hits})")
        row = dict(key=cell_key(L, B, th), L=L, B=B, threads=used, reps=int(c["reps"]), n_batches=len(batches),
                   busy_other=round(busy, 4), flagged=bool(np.isfinite(busy) and busy > spec["max_busy"]),
                   retimed=first_busy is not None, first_busy=None if first_busy is None else round(first_busy, 4),
                   wall_s=round(time.perf_counter() - t0, 2),
                   times={v: t[v].tolist() for v in variants}, cpu={v: t[f"{v}@cpu"].tolist() for v in variants})
        out["cells"].append(row)
        med = {v: np.median(t[v]) * 1e3 for v in variants}
        log(f"  [pid {os.getpid()}] {row['key']}: " + ", ".join(f"{v} {m:.1f} ms" for v, m in med.items())
            + f" | busy(other) {busy:.0%}{' FLAGGED' if row['flagged'] else ''}")
    out["total_s"] = round(time.perf_counter() - t_start, 2)
    return out


def run_processes(spec_path, n_procs: int, *, timeout: float = 900, log=print) -> list[dict]:
    """Run the spec's whole grid in ``n_procs`` fresh processes, one after another; returns their results."""
    if n_procs < 1:
        raise ValueError(f"n_procs must be >= 1, got {n_procs}")
    spec_path = Path(spec_path)
    results = []
    for p in range(n_procs):
        out = spec_path.with_name(f"{spec_path.stem}_proc{p}.json")
        if out.exists():
            out.unlink()
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "attnlib.attmemo.bench", str(spec_path), str(out)],
                           capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2])
        if r.returncode != 0 or not out.exists():
            raise RuntimeError(f"bench process {p} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        res = json.loads(out.read_text())
        res["process"], res["process_wall_s"] = p, round(time.perf_counter() - t, 2)
        log(f"process {p + 1}/{n_procs} (pid {res['pid']}): {res['process_wall_s']:.0f} s "
            f"(model and maps {res['load_s']:.1f} s)\n" + r.stdout.rstrip())
        results.append(res)
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m attnlib.attmemo.bench SPEC OUT.json")
    res = time_grid(argv[0])
    Path(argv[1]).write_text(json.dumps(res))


if __name__ == "__main__":
    main()


def entry_id(L: int, i: int) -> int:
    """Store entry id of the i-th timed input at L tokens (kept apart from the database's ids)."""
    return 10 ** 6 * int(L) + int(i)


def build_bench(path, fe, texts: list[str], plan: list[dict], indexes: dict, *, store_path, log=print,
                max_busy: float = 0.10, wait_s: float = 0.0, trials: int = 200) -> dict:
    """Prepare everything a bench process needs and write the spec (`write_spec`).

    texts: candidate e-mails (real text), the first ones with at least L tokens are used at L (truncated
    to exactly L: no padding); plan: [{L, B, threads, reps, n_batches (default 1), variants (optional)}];
    indexes: {L: `lookup.InputIndex`} (the engine's per-length index: its centre, its database keys and
    lengths and its calibrated ``cos_min``). The timed inputs' own keys and maps join the database (exact
    re-sends); the search backend per length is the cheaper one measured on that database
    (`engine.choose_backend`). Returns {spec, n_inputs {L}, backend {L}, search_us {L}, db_size {L},
    store_bytes}."""
    from .. import models
    from .engine import choose_backend
    from .experiment import layer_raws, maps_of
    from .lookup import MapStore

    Ls = sorted({int(c["L"]) for c in plan})
    need = {L: max(int(c["B"]) * int(c.get("n_batches", 1)) for c in plan if int(c["L"]) == L) for L in Ls}
    n_tok = np.array([len(x) for x in fe.rm.tokenizer(list(texts), truncation=False)["input_ids"]])
    chosen, inputs, index_data, backend, search_us, db_size = {}, {}, {}, {}, {}, {}
    for L in Ls:
        pool = [i for i in range(len(texts)) if n_tok[i] >= L][:min(need[L], 16)]   # at most 16 distinct e-mails
        if not pool:
            raise ValueError(f"no e-mail has {L} tokens: the cell cannot be timed")
        chosen[L] = [texts[i] for i in pool]
        enc = models.encode(fe.rm, chosen[L], L)
        if enc["input_ids"].shape[1] != L or not bool(enc["attention_mask"].all()):
            raise ValueError(f"inputs at {L} tokens must fill all {L} tokens")
        inputs[L] = (enc["input_ids"].numpy(), [entry_id(L, i) for i in range(len(pool))])
        ix = indexes[L]
        raw, _ = layer_raws(fe, chosen[L], L)
        qkeys = ix.embed_raw(raw[0])
        keys, lens, ids = _index_rows(ix)
        same = lens == L
        db_size[L] = int(same.sum())
        backend[L], search_us[L] = choose_backend(np.concatenate([keys[same], qkeys]), qkeys, trials=trials)
        index_data[L] = dict(centre=ix.embedder.centre[0].numpy(), keys=np.concatenate([keys, qkeys]),
                             lengths=np.concatenate([lens, np.full(len(qkeys), L)]),
                             entry_ids=np.concatenate([ids, inputs[L][1]]), cos_min=ix.cos_min, backend=backend[L])
        log(f"bench inputs at {L} tokens: {len(pool)} e-mails; database of that length {db_size[L]} records; search "
            f"{', '.join(f'{k} {v:.1f} us' for k, v in search_us[L].items())} -> {backend[L]}")
    entries = sorted(e for L in Ls for e in inputs[L][1])
    text_of = {entry_id(L, i): (chosen[L][i], L) for L in Ls for i in range(len(chosen[L]))}
    meta = dict(kind="attmemo-bench-maps", model=fe.rm.name,
                inputs={str(L): models_key(chosen[L]) for L in Ls})

    def maps(part):
        return [maps_of(fe, [text_of[e][0]], text_of[e][1])[0] for e in part]

    store, _ = MapStore.build(store_path, meta, entries, maps, log=log)
    cells = []
    for c in plan:
        L, B = int(c["L"]), int(c["B"])
        n = len(inputs[L][1])
        flat = [i % n for i in range(B * int(c.get("n_batches", 1)))]
        cells.append(dict(L=L, B=B, threads=int(c["threads"]), reps=int(c["reps"]),
                          groups=[flat[s:s + B] for s in range(0, len(flat), B)],
                          **({"variants": list(c["variants"])} if c.get("variants") else {})))
    write_spec(path, cells=cells, inputs=inputs, index=index_data, proj=indexes[Ls[0]].embedder.proj.numpy(),
               n_chunks=indexes[Ls[0]].embedder.n_chunks, store=dict(path=str(store_path), meta=store.store.meta),
               max_busy=max_busy, wait_s=wait_s)
    return dict(spec=Path(path), n_inputs={L: len(inputs[L][1]) for L in Ls}, backend=backend, search_us=search_us,
                db_size=db_size, store_bytes=store.nbytes)


def models_key(texts) -> str:
    from .perlayer import input_key

    return input_key(list(texts))


def _index_rows(ix):
    """(keys, lengths, entry ids) of every database row of an `lookup.InputIndex` (from its faiss indexes)."""
    keys, lens, ids = [], [], []
    for L, (idx, rows) in ix.keys.by_len.items():
        k = idx.reconstruct_n(0, idx.ntotal)
        keys.append(k)
        lens.append(np.full(len(k), L))
        ids.append(np.asarray(rows))
    return (np.concatenate(keys).astype(np.float32), np.concatenate(lens).astype(np.int64),
            np.concatenate(ids).astype(np.int64))
