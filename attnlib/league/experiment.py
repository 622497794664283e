"""The league's runs: for each workload, each technique's knob swept on real text with its quality
measured and its work counted in the same pass, cached by their inputs; then the matched knob per
technique and its speedup and energy over the dense, unfused baseline on one template.

Quality budget (one for all): accuracy loss at most `BUDGET["accuracy"]` points, perplexity change at
most `BUDGET["perplexity"]` %, judged on the 95% interval's UPPER end. Each technique's grid is walked
from its most conservative knob and the walk STOPS at the first knob over the budget (`sweep`): the
matched knob is the last one before it (a grid, not a bisection: conservative by up to one grid step;
a more aggressive knob that happened to pass on few items after a failing one is not taken).
A workload whose quality runs would not fit the run budget carries the knob matched on its shorter
sibling (enc-512 from enc-128; dec-decode-8K and dec-prefill-2K from dec-decode-2K) and re-checks the
quality there on fewer items (a prefill re-check runs the technique in every prompt row: its own
quality and counts, not the decode steps'); the carried rows say so. A technique with no knob within
the budget on the sibling (not even the grid's most conservative one) is not re-run on the longer
workload (its row says "not run" and why).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .. import stats
from ..cache import cached
from .techniques import KNOBS, Counts, a3_fn, sprint_fn, token_picker_fn
from .workloads import Workload

VERSION = 2  # 2: grids walked until the first knob over the budget
BUDGET = {"accuracy": 1.0, "perplexity": 1.0}
#: Where a workload's knob comes from when its own sweep does not fit the run budget.
CARRIED_FROM = {"enc-512": "enc-128", "dec-decode-8K": "dec-decode-2K", "dec-prefill-2K": "dec-decode-2K"}
SPRINT_Z = 1.0  # margin in analog-error standard deviations (the SPRINT notebook's frozen-model default)


@dataclass(frozen=True)
class Sizes:
    """How much real data each run uses (see `sizes`)."""

    emails: int            # labelled e-mails for the probe (70% train, 30% test)
    carried_emails: int    # e-mails for the probe of a carried (longer) encoder workload
    a3_test: int           # test e-mails A3's (slow) quality runs use
    carried_test: int      # test e-mails / windows of a carried workload's re-check
    windows: int           # decoder windows per corpus (Austen, Brown)
    rows: int              # decode steps scored per window
    calib_tokens: int      # tokens of the SPRINT calibration text (decoder)


def sizes(profile: str) -> Sizes:
    if profile == "quick":
        return Sizes(emails=60, carried_emails=40, a3_test=12, carried_test=8, windows=1, rows=8, calib_tokens=128)
    return Sizes(emails=800, carried_emails=400, a3_test=120, carried_test=60, windows=3, rows=32, calib_tokens=512)


# ----------------------------------------------------------------------------- encoder
def _encoder_probe(rm, w: Workload, S: Sizes, n_emails: int):
    from .. import data, evaluate

    texts, labels, names = data.load_labelled("spam")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(texts))[:S.emails + 8]
    calib = [texts[i] for i in idx[S.emails:]]          # 8 e-mails kept out of the probe for calibration
    pick = idx[:n_emails]
    probe = evaluate.fit_probe(rm, [texts[i] for i in pick], labels[pick], max_length=w.context, seed=0,
                               label_names=names, progress=False)
    return probe, calib


def _calibrator(rm, batch):
    from ..models import capture
    from ..sprint.algorithm import Calibrator

    return Calibrator(capture(rm, batch))


def run_encoder(rm, w: Workload, S: Sizes, knobs: dict, *, test_items: int | None = None) -> dict:
    """Quality and counts of each technique at each knob of ``knobs`` ({technique: [knob, ...]}) on the
    probe's test e-mails. Returns {technique: {knob: dict(correct, sums)}, "exact": correct}."""
    from .. import evaluate, models
    from ..sprint.algorithm import AnalogConfig

    def compute():
        probe, calib_texts = _encoder_probe(rm, w, S, S.emails if test_items is None else S.carried_emails)
        n_test = min(test_items or probe.n_test, probe.n_test)
        probe.test_texts, probe.test_labels = probe.test_texts[:n_test], probe.test_labels[:n_test]
        out = {"exact": evaluate.probe_correct(rm, probe, progress=False)}
        cal = _calibrator(rm, models.encode(rm, calib_texts, w.context)) if "SPRINT" in knobs else None
        a3_probe = copy.copy(probe)                     # A3 (the slowest) scores the first a3_test items
        a3_probe.test_texts, a3_probe.test_labels = probe.test_texts[:S.a3_test], probe.test_labels[:S.a3_test]
        for tech, grid in knobs.items():
            if tech not in ("SPRINT", "A3"):
                raise ValueError(f"{tech} does not run on an encoder workload")

            def one(knob, tech=tech):
                counts = Counts()
                if tech == "SPRINT":
                    fn, p = sprint_fn(cal, knob, counts, z=SPRINT_Z, cfg=AnalogConfig(), kv_groups=1, decode=False), probe
                else:
                    fn, p = a3_fn(knob, counts), a3_probe
                return dict(correct=evaluate.probe_correct(rm, p, fn, progress=False), sums=counts.arrays())

            out[tech] = sweep(out, tech, grid, one, "accuracy")
        return out

    key = dict(v=VERSION, workload=w.key, context=w.context, sizes=S.__dict__, knobs={k: list(v) for k, v in knobs.items()},
               test_items=test_items, z=SPRINT_Z)
    return cached("league", f"encoder-{w.key}", key, compute)


# ----------------------------------------------------------------------------- decoder
def decoder_windows(rm, length: int, per_corpus: int) -> tuple[list[list[int]], list[str]]:
    """``per_corpus`` windows of ``length`` tokens from Austen and from Brown (running text). Where no
    single document is long enough (Brown's samples at 8K), the corpus's documents are joined in order
    (blank line between them) before cutting."""
    from .. import data, evaluate

    out, corpus = [], []
    for name in ("austen", "brown"):
        docs = data.load_text(name)
        try:
            ws = evaluate.text_windows(rm, docs, length, per_corpus, seed=1)
        except ValueError:
            ws = evaluate.text_windows(rm, ["\n\n".join(docs)], length, per_corpus, seed=1)
        out += ws
        corpus += [name] * len(ws)
    return out, corpus


def run_decoder(rm, w: Workload, S: Sizes, knobs: dict, *, windows_per_corpus: int | None = None) -> dict:
    """Decoder quality and counts of each technique at each knob. A decode workload: teacher-forced
    decode steps (`DecodeBench`: an exact prefix of ``w.context`` tokens, or fewer where the model's
    position limit leaves no room for the scored rows: SmolLM2 8,192 positions, so the 8K steps see
    8,192 - rows - 1 to 8,191 cached tokens). A prefill workload: prompts of ``w.context`` tokens run in
    one forward with the technique in every row (`PrefillBench`), every next-token prediction scored.
    Returns {technique: {knob: dict(nll, tokens, sums)}, "exact": dict(nll, tokens), "corpus": [...]}."""
    from ..sprint.algorithm import AnalogConfig
    from .quality import DecodeBench, PrefillBench

    per = windows_per_corpus or S.windows
    prefill = w.phase == "prefill"
    if prefill and "Token-Picker" in knobs:
        raise ValueError("Token-Picker prunes decode steps only; a prefill workload cannot run it")
    prefix = min(w.context, rm.max_positions - S.rows - 1)   # the model's position limit caps the longest context
    length = min(w.context, rm.max_positions) if prefill else prefix + S.rows + 1

    def compute():
        windows, corpus = decoder_windows(rm, length, per)
        G = rm.n_heads // rm.n_kv_heads
        cal = None
        if "SPRINT" in knobs:
            from .. import data, evaluate

            calib = evaluate.text_windows(rm, data.load_text("austen"), S.calib_tokens, 1, seed=99)
            import torch
            cal = _calibrator(rm, {"input_ids": torch.tensor(calib), "attention_mask": torch.ones(1, S.calib_tokens,
                                                                                                 dtype=torch.long)})
        bench = PrefillBench(rm, windows) if prefill else DecodeBench(rm, windows, prefix)
        out = {"exact": bench.nll(), "corpus": corpus}
        for tech, grid in knobs.items():
            def one(knob, tech=tech):
                c = Counts()
                if tech == "SPRINT":
                    fn = sprint_fn(cal, knob, c, z=SPRINT_Z, cfg=AnalogConfig(), kv_groups=G, decode=not prefill)
                elif tech == "A3":
                    fn = a3_fn(knob, c)
                elif tech == "Token-Picker":
                    fn = token_picker_fn(knob, c, kv_groups=G)
                else:
                    raise ValueError(f"{tech} does not run on a decoder workload")
                return dict(**bench.nll(fn, f"{tech} {knob}"), sums=c.arrays())

            out[tech] = sweep(out, tech, grid, one, "perplexity")
        return out

    key = dict(v=VERSION, workload=w.key, context=w.context, sizes=S.__dict__, per=per,
               knobs={k: list(v) for k, v in knobs.items()}, z=SPRINT_Z)
    return cached("league", f"decoder-{w.key}", key, compute)


# ----------------------------------------------------------------------------- matching
def sweep(run: dict, tech: str, grid, measure, quality: str) -> dict:
    """{knob: measure(knob)} over ``grid`` (most conservative first), stopping after the first knob
    whose loss interval's upper end is over the budget; ``run`` holds the exact reference."""
    out = {}
    for knob in grid:
        out[str(knob)] = measure(knob)
        if quality_loss({**run, tech: out}, tech, knob, quality)[1].hi > BUDGET[quality]:
            break
    return out


def quality_loss(run: dict, tech: str, knob, quality: str) -> tuple[float, stats.Interval]:
    """The quality loss of ``tech`` at ``knob``: accuracy points or perplexity change in %."""
    r = run[tech][str(knob)]
    if quality == "accuracy":
        ref = run["exact"][:len(r["correct"])]
        return stats.accuracy_loss(ref, r["correct"])
    ex = run["exact"]
    ratio, iv = stats.perplexity_ratio(ex["nll"], r["nll"], r["tokens"])
    return 100 * (ratio - 1), stats.Interval(100 * (iv.lo - 1), 100 * (iv.hi - 1), iv.method, iv.n)


def matched_knob(run: dict, tech: str, quality: str) -> tuple[object | None, list[dict]]:
    """The most aggressive knob (last in grid order) whose loss interval's upper end is within the
    budget, and every knob's (knob, loss, lo, hi, within) row. None when no knob is within it. On a
    run walked by `sweep` this is the knob before the first one over the budget."""
    rows, best = [], None
    for knob in run[tech]:
        loss, iv = quality_loss(run, tech, knob, quality)
        ok = iv.hi <= BUDGET[quality]
        rows.append(dict(knob=float(knob), loss=loss, lo=iv.lo, hi=iv.hi, within=ok))
        if ok:
            best = knob
    return best, rows


def knob_grid(tech: str) -> tuple:
    return KNOBS[tech][1]


# ----------------------------------------------------------------------------- the whole league
def run_league(profile: str, *, progress: bool = True) -> dict:
    """Every workload's runs: the short workloads sweep each technique's knob grid; the long ones
    (`CARRIED_FROM`) re-check the matched knob. Returns {workload key: run}. Cached piecewise."""
    import time

    from .. import models
    from .workloads import workloads

    S, wls = sizes(profile), workloads(profile)
    t0 = time.perf_counter()
    enc = [k for k, w in wls.items() if w.phase == "encode"]
    dec = [k for k, w in wls.items() if w.phase == "decode"]
    pre = [k for k, w in wls.items() if w.phase == "prefill"]
    runs = {}
    say = print if progress else (lambda *a, **k: None)
    rm = models.load_encoder()
    for i, key in enumerate(enc):
        if i == 0:
            knobs = {"SPRINT": knob_grid("SPRINT"), "A3": knob_grid("A3")}
            runs[key] = run_encoder(rm, wls[key], S, knobs)
        else:
            knobs, skipped = carried_knobs(runs[enc[0]], ("SPRINT", "A3"), "accuracy", enc[0])
            runs[key] = dict(run_encoder(rm, wls[key], S, knobs, test_items=S.carried_test), skipped=skipped)
        say(f"[league] {key} done ({time.perf_counter() - t0:.0f} s)")
    rd = models.load_decoder()
    for i, key in enumerate(dec + pre):
        if i == 0:
            knobs = {"SPRINT": knob_grid("SPRINT"), "A3": knob_grid("A3")[:1], "Token-Picker": knob_grid("Token-Picker")}
            runs[key] = run_decoder(rd, wls[key], S, knobs)
        else:
            techs = ("SPRINT", "A3") if key in pre else ("SPRINT", "A3", "Token-Picker")
            knobs, skipped = carried_knobs(runs[dec[0]], techs, "perplexity", dec[0])
            runs[key] = dict(run_decoder(rd, wls[key], S, knobs, windows_per_corpus=1), skipped=skipped)
        say(f"[league] {key} done ({time.perf_counter() - t0:.0f} s)")
    return runs


def carried_knobs(first: dict, techs, quality: str, source: str) -> tuple[dict, dict]:
    """({technique: (knob,)}, {technique: reason}): the knob matched on the shorter sibling's run
    ``first`` (workload ``source``), and the techniques not re-run because no knob of theirs stayed
    within the budget there, not even the grid's most conservative one (run budget: the longer
    workload's re-check uses fewer items and could only confirm the failure or leave it open)."""
    knobs, skipped = {}, {}
    for t in techs:
        knob, rows = matched_knob(first, t, quality)
        if knob is None:
            r = rows[0]
            skipped[t] = (f"not run: on {source} even its most conservative knob ({r['knob']:g}) lost "
                          f"{r['loss']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}], over the budget")
        else:
            knobs[t] = (float(knob),)
    return knobs, skipped


def attmemo_record(results_folder) -> dict | None:
    """AttMEMO's hit rate on the e-mail stream as it arrives, per length ({tokens: rate}), and its
    accuracy loss, as its notebook recorded them (results/05_attmemo.json); None when not recorded."""
    import json
    import re
    from pathlib import Path

    path = Path(results_folder) / "05_attmemo.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    rates = {}
    for v in data.get("values", []):
        m = re.fullmatch(r"hit_rate_as_arrives_(\d+)", v["name"])
        if m:
            rates[int(m.group(1))] = float(v["value"])
    loss = next((c for c in data.get("claims", []) if c["claim_id"] == "accuracy_loss"), None)
    if not rates or loss is None or loss.get("reproduced") is None:
        return None
    return dict(hit_rates=rates, loss=float(loss["reproduced"]), lo=float(loss["interval"]["lo"]),
                hi=float(loss["interval"]["hi"]), source=f"the AttMEMO notebook's record ({data.get('profile')} profile)")
