"""SPRINT's claims module (attnlib.sprint.paper_claims), the baseline's residency / accounting options,
the double-count fix and the accuracy study's de-duplication and seeded interval (attnlib.sprint.accuracy)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from attnlib import sprint as sp
from attnlib.claims import Recorder
from attnlib.hw import KiB
from attnlib.sprint import accuracy as A
from attnlib.sprint import paper_claims as PC
from attnlib.sprint.buffer import simulate_fetches
from attnlib.workloads import workload


def _stats(L=2, N=2, H=3, T=64, keep=0.3, seed=0):
    """Random keep masks with a given keep rate, recorded as RowStats with bit-packed masks."""
    rng = np.random.default_rng(seed)
    out = []
    for l in range(L):
        m = rng.random((N, H, T, T)) < keep
        m[..., 0] = True
        kept = m.sum(-1).astype(np.int32)
        overlap = np.concatenate([np.zeros((N, H, 1), np.int32), (m[..., 1:, :] & m[..., :-1, :]).sum(-1)], -1).astype(np.int32)
        allowed = np.full((N, H, T), T, np.int32)
        out.append(sp.RowStats(l, kept, overlap, allowed, np.ones((N, H, T), np.float32), np.ones((N, H, T), bool),
                               m.any(-2).sum(-1), np.packbits(m, axis=-1), T))
    return out


# ----------------------------------------------------------------------------- residency options
@pytest.mark.parametrize("T", [96, 256])
def test_baseline_residency_none_fetches_at_least_resident_rows_at_least_belady(T):
    acc, _ = sp.sprint_hardware("S")
    d, bpe = 32, 2
    row = 2 * d * bpe
    cap = int((16 * KiB - 2 * d * bpe) // row)       # K/V rows left after one Q and one O row
    fetched = {r: sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, **PC.baseline_kwargs(r)).detail["streamed_rows"]
               for r in PC.RESIDENCY_OPTIONS}
    full = np.ones((1, T, T), dtype=bool)             # the baseline needs every key for every query
    belady = simulate_fetches(full, cap, "belady")[0]
    lru = simulate_fetches(full, cap, "lru")[0]
    assert fetched["none"] == T * T
    assert fetched["none"] >= fetched["resident rows"] >= belady - 2 * T   # staging rows: within 2 rows per query
    assert fetched["none"] >= lru >= belady
    assert fetched["query-tiled"] <= fetched["resident rows"]
    if T <= cap:                                       # everything fits: resident rows fetch each row once
        assert fetched["resident rows"] == pytest.approx(T, abs=2 * T) and belady == T


def test_sprint_buffer_none_ge_lru_ge_belady_on_masks():
    for st in _stats(T=48):
        m = st.keep_masks().reshape(-1, 48, 48)
        for cap in (4, 16, 47):
            none = simulate_fetches(m, 0, "lru")
            lru, bel = simulate_fetches(m, cap, "lru"), simulate_fetches(m, cap, "belady")
            assert np.all(none >= lru) and np.all(lru >= bel)
            assert np.array_equal(none, m.sum((1, 2)))


def test_residency_option_validation():
    acc, _ = sp.sprint_hardware("S")
    with pytest.raises(ValueError, match="residency"):
        sp.baseline_cost(acc, layers=1, heads=1, seq_len=64, d_head=32, residency="lru")
    with pytest.raises(ValueError, match="query_tile"):
        sp.baseline_cost(acc, layers=1, heads=1, seq_len=64, d_head=32, residency="query-tiled", query_tile=1)
    with pytest.raises(ValueError, match="scenario"):
        PC.baseline_kwargs("LRU")


# ----------------------------------------------------------------------------- accounting options and the double count
def test_fixed_traffic_and_memory_technology_accounting():
    acc, _ = sp.sprint_hardware("S")
    d, bpe, T = 32, 2, 128
    on = sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, residency="none")
    off = sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, residency="none", fixed_traffic=False)
    assert on.traffic_bytes - off.traffic_bytes == pytest.approx(T * 2 * d * bpe + 2 * T * d * bpe)
    assert off.energy["DRAM"] == pytest.approx(8e-12 * 3.1 * off.traffic_bytes)      # reads only
    dram = sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, residency="none", memory_pj_per_bit=(20.3, 20.3))
    assert dram.energy["DRAM"] == pytest.approx(8e-12 * 20.3 * dram.traffic_bytes)
    assert dram.time_s == on.time_s
    with pytest.raises(ValueError, match="memory_pj_per_bit"):
        sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, memory_pj_per_bit=(0, 1))


def test_key_msbs_are_written_once_as_crossbar_cells_not_also_to_main_memory():
    from attnlib.hw import reram as rr

    acc, xb = sp.sprint_hardware("S")
    st = _stats(L=1, N=1, H=2, T=64)
    d, T, heads = 32, 64, 2
    cfg = sp.AnalogConfig(key_bits=4)
    with_w = sp.sprint_cost(acc, st, heads=heads, d_head=d, xbar=xb, cfg=cfg)
    no_w = sp.sprint_cost(acc, st, heads=heads, d_head=d, xbar=xb, cfg=cfg, include_writes=False)
    cells = heads * rr.write_energy_j(T, d, key_bits=4, spec=xb)
    assert with_w.energy["in-memory thresholding"] - no_w.energy["in-memory thresholding"] == pytest.approx(cells)
    # main-memory writes: 12 of the 16 key bits, the values and O; the 4 MSBs are not written there too
    writes_bytes = heads * (T * (2 * d * 2 - d * 4 / 8) + T * d * 2)
    off = sp.sprint_cost(acc, st, heads=heads, d_head=d, xbar=xb, cfg=cfg, fixed_traffic=False)
    assert with_w.traffic_bytes - off.traffic_bytes == pytest.approx(writes_bytes + heads * T * d * 2)
    e_fixed = with_w.energy["DRAM"] - off.energy["DRAM"]
    assert e_fixed == pytest.approx(8e-12 * (24.4 * writes_bytes + 3.1 * heads * T * d * 2))


# ----------------------------------------------------------------------------- the claims module
def test_every_headline_declares_direction_axes_and_a_headline_at_the_papers_option():
    lengths = [128, 256, 512]
    specs = {"speedup": PC.speedup_axes(lengths), "energy_reduction": PC.energy_axes(lengths),
             "accuracy_degradation": PC.accuracy_axes(), "newly_fetched": PC.new_fetch_axes(lengths)}
    for cid in PC.HEADLINES:
        value, direction, source = PC.PAPER[cid]
        assert direction in ("about", "at least", "at most", "within") and source.strip()
    assert PC.PAPER["accuracy_degradation"][1] == "at most"         # one-sided, as the paper says it
    for cid, axes in specs.items():
        assert axes
        head = PC.headline_scenario(axes)
        for a in axes:
            assert head[a.name] in a.plausible
    r = PC.residency_axis()
    assert r.paper == "none" and r.source.startswith("secondary")
    assert "pruning_rate_later_chip" not in PC.HEADLINES


def test_scenario_grid_from_cached_masks_and_claim_judged_over_it():
    acc, xb = sp.sprint_hardware("S")
    stats = {64: _stats(T=64, keep=0.2), 96: _stats(T=96, keep=0.2, seed=1)}
    shapes = {PC.SHAPE_OPTIONS[0]: workload("minilm-l6"), PC.SHAPE_OPTIONS[1]: workload("bert-base")}
    grid = PC.scenario_grid(acc, xb, sp.AnalogConfig(), stats, shapes)
    assert len(grid) == 3 * 2 * 2 * 3 * 2
    for res, fx, mem, length, sh in grid:
        sp_none, en_none = grid["none", fx, mem, length, sh]
        sp_res, en_res = grid["resident rows", fx, mem, length, sh]
        assert sp_none >= sp_res - 1e-12 and en_none >= en_res - 1e-12      # no residency: a weaker baseline
        assert grid[res, fx, "DRAM", length, sh][1] > grid[res, fx, PC.MEMORY_OPTIONS[0], length, sh][1]
        assert grid[res, fx, "DRAM", length, sh][0] == grid[res, fx, PC.MEMORY_OPTIONS[0], length, sh][0]
    mix = grid["none", "counted", PC.MEMORY_OPTIONS[0], PC.MIX, PC.SHAPE_OPTIONS[0]]
    per = [grid["none", "counted", PC.MEMORY_OPTIONS[0], str(T), PC.SHAPE_OPTIONS[0]] for T in stats]
    assert mix[0] == pytest.approx(math.sqrt(per[0][0] * per[1][0]))
    # judged over the grid by the shared machinery
    axes = PC.energy_axes(list(stats))
    head = PC.headline_scenario(axes)
    rows = [r for r in PC.grid_rows(grid, axes, 1) if r[0] != head]
    value = grid[tuple(head[a.name] for a in axes)][1]
    rec = Recorder("t", "t")
    c = rec.claim("e", "e", paper_value=19.6, reproduced=value, unit="x", kind="ratio", basis="modelled",
                  interval=dict(lo=value, hi=value, method="none", n=1), assumption_range=dict(lo=value, hi=value, swept={}),
                  deviations=[], operating_point=dict(how="paper setting", rule="r"), averaging="a", direction="about",
                  axes=axes, scenarios=rows, headline_scenario=head, headline_rule=PC.HEADLINE_RULE)
    assert c.scenario_range["n"] == len(grid)
    assert len(PC.grid_rows(grid, PC.speedup_axes(list(stats)), 0)) == len(grid) // 2


def test_new_fetch_and_reuse_fractions():
    st = _stats(L=1, N=1, H=1, T=32, keep=0.25)
    m = st[0].keep_masks()[0, 0]
    new = (m[1:] & ~m[:-1]).sum(-1) / 32
    assert PC.new_fetch_fractions(st)[0] == pytest.approx(new.mean())
    reuse = (m[1:] & m[:-1]).sum() / m[1:].sum()
    assert PC.reuse_fractions(st)[0] == pytest.approx(reuse)
    # keeping the same keys for every query: nothing new after the first query, full reuse
    same = np.zeros((1, 1, 8, 8), bool)
    same[..., :3] = True
    kept = same.sum(-1).astype(np.int32)
    ov = np.concatenate([np.zeros((1, 1, 1), np.int32), kept[..., 1:]], -1)
    rs = sp.RowStats(0, kept, ov, np.full((1, 1, 8), 8, np.int32), np.ones((1, 1, 8), np.float32), np.ones((1, 1, 8), bool))
    assert PC.new_fetch_fractions([rs])[0] == 0 and PC.reuse_fractions([rs])[0] == 1


# ----------------------------------------------------------------------------- accuracy study
class _Tok:
    """A whitespace tokenizer with the Hugging Face call signature used by `dedup_against`."""

    def __call__(self, texts, add_special_tokens=False, truncation=True, max_length=None, verbose=False):
        return {"input_ids": [[hash(w.lower()) % 1000 for w in t.split()][:max_length] for t in texts]}


def test_dedup_rule_removes_prefix_duplicates_from_validation_and_test():
    tok = _Tok()
    train = ["a b c d e", "x y z w v", "p q r s t", "k l m n o"]
    labels = np.array([0, 1, 0, 1])
    # training split: 2 for fine-tuning, the rest for validation; one validation e-mail repeats a fine-tuning prefix
    train_x = train[:2] + ["A B C d e tail differs", "fresh e-mail here now"]
    splits = A.finetune_splits(tok, train_x, labels, ["a b c d e and more", "fresh e-mail here now and then", "new one"],
                               np.array([0, 1, 1]), n_train=2, n_val=1, n_tokens=4)
    assert splits["val"][0] == ["fresh e-mail here now"] and splits["removed"]["val"] == 1
    # test: the first duplicates a fine-tuning prefix (4 tokens), the second a validation e-mail's
    assert splits["test"][0] == ["new one"] and list(splits["test"][1]) == [1] and splits["removed"]["test"] == 2
    assert "first 4 tokens" in splits["rule"]
    # no test e-mail left shares its first 4 tokens with a fine-tuning or validation e-mail
    assert not A.dedup_against(tok, splits["train"][0] + splits["val"][0], splits["test"][0], 4).any()
    with pytest.raises(ValueError, match="validation"):
        A.finetune_splits(tok, train_x, labels, [], np.array([]), n_train=2, n_val=5, n_tokens=4)


def test_regulariser_is_chosen_on_validation_results():
    val = {0.05: (0.1, 0.5), 0.2: (0.3, 0.7), 1.0: (0.9, 0.8)}
    assert A.choose_regulariser(val, 0.36) == (0.2, True)
    assert A.choose_regulariser({1.0: (0.9, 0.8), 2.0: (0.5, 0.9)}, 0.36) == (2.0, False)


def test_seeded_loss_covers_seed_variation():
    rng = np.random.default_rng(0)
    n = 400
    base = [rng.random(n) < 0.95 for _ in range(3)]
    same = [b.copy() for b in base]
    v, iv = A.seeded_loss(base, same, n_resamples=500)
    assert v == 0 and iv.lo == iv.hi == 0
    # seeds that disagree widen the interval beyond a single seed's item bootstrap
    pr = [base[0].copy(), base[1] & (rng.random(n) < 0.95), base[2] & (rng.random(n) < 0.9)]
    v3, iv3 = A.seeded_loss(base, pr, n_resamples=2000)
    assert iv3.lo <= v3 <= iv3.hi and v3 > 0
    assert "seed" in iv3.method
    with pytest.raises(ValueError):
        A.seeded_loss(base, pr[:2])
