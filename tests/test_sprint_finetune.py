"""Tests of attnlib.sprint.finetune: the soft gate, the gated attention's limits, the regulariser's
direction on the real encoder (a tiny run) and the cache round-trip of fine-tuned weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnlib import models
from attnlib import sprint as sp
from attnlib.attention import attention_torch, causal_mask
from attnlib.sprint import finetune as ft


def _qkv(B=2, H=3, T=20, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, d, generator=g) for _ in range(3))


def test_soft_gate_tends_to_the_hard_mask_as_temperature_goes_to_zero():
    q, k, v = _qkv()
    scale = 0.25
    s = (q @ k.transpose(-1, -2)) * scale
    v_sorted = s.flatten().sort().values
    i = int(0.6 * len(v_sorted))                  # prunes about 60% of the pairs
    thr = float(v_sorted[i - 1] + v_sorted[i]) / 2   # halfway between two scores: no score sits on it
    gap = float((s - thr).abs().min())
    hard = s >= thr
    # keep at least one key per row (the hard reference needs a survivor in every row)
    assert hard.any(-1).all()
    ref = sp.sprint_attention(q, k, v, hard, None, scale)
    errs = []
    for tau in (1.0, 0.1, 0.01, gap / 10, gap / 100):
        g = ft.soft_gate(s, thr, tau)
        out, _, _ = ft.gated_attention(q, k, v, None, scale, thr, tau)
        errs.append(float((out - ref).abs().max()))
        assert float(((g > 0.5) != hard).float().mean()) == 0.0       # the gate's 1/2 level is the threshold
    assert errs[-1] < 1e-5 and all(a >= b - 1e-6 for a, b in zip(errs, errs[1:])), errs
    assert float((ft.soft_gate(s, thr, gap / 100) - hard.float()).abs().max()) < 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_threshold_minus_inf_prunes_nothing_and_reproduces_reference_attention(causal):
    q, k, v = _qkv(seed=1)
    T = q.shape[-2]
    mask = torch.where(torch.as_tensor(causal_mask(T)), 0.0, float("-inf"))[None, None] if causal else None
    fn = ft.GatedAttention(torch.full((2,), -math.inf), temperature=0.5)
    out = fn(q, k, v, mask, 0.25, 1)
    torch.testing.assert_close(out, attention_torch(q, k, v, mask=mask, scale=0.25), rtol=1e-5, atol=1e-6)
    assert float(fn.keep_fractions[1]) == pytest.approx(1.0)


def test_gate_is_differentiable_in_the_threshold_and_keep_fraction_falls_as_it_rises():
    q, k, v = _qkv(seed=2)
    thr = torch.tensor([0.0], requires_grad=True)
    fn = ft.GatedAttention(thr, temperature=0.5)
    fn(q, k, v, None, 0.25, 0)
    fn.keep_fractions[0].backward()
    assert thr.grad is not None and float(thr.grad) < 0   # raising the threshold lowers the keep fraction


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="temperature"):
        ft.soft_gate(torch.zeros(3), 0.0, 0.0)
    with pytest.raises(ValueError, match="reg"):
        ft.FinetuneConfig(prune=False, reg=1.0)
    with pytest.raises(ValueError, match="max_length"):
        ft.FinetuneConfig(max_length=0)


@pytest.fixture(scope="module")
def encoder():
    return models.load_encoder()


TEXTS = ["Win a free cruise now, click here to claim your prize!!!", "Meeting moved to 3pm, see agenda attached.",
         "Cheap meds online, no prescription needed, order today", "Can you review my patch before Friday?",
         "You have been selected for a cash reward, reply now", "The build broke again on the release branch.",
         "Limited offer: lose weight fast with this one trick", "Lunch tomorrow? The usual place at noon."]
LABELS = np.array([1, 0, 1, 0, 1, 0, 1, 0])


def test_regulariser_increases_pruning_monotonically_on_a_tiny_run(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_CACHE", str(tmp_path))
    keep, thr = [], []
    for reg in (0.0, 2.0, 20.0):
        cfg = ft.FinetuneConfig(prune=True, reg=reg, epochs=2, batch_size=4, max_length=16, lr_threshold=0.2)
        m = ft.finetune_encoder(encoder, TEXTS, LABELS, cfg, use_cache=False)
        keep.append(float(m.history["keep"][-1]))
        thr.append(float(np.mean(m.thresholds)))
    assert keep[0] > keep[1] > keep[2], keep
    assert thr[0] < min(thr[1], thr[2]), thr         # pruning pressure raises the thresholds


def test_finetune_cache_round_trip_and_the_baseline_keeps_every_key(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_CACHE", str(tmp_path))
    cfg = ft.FinetuneConfig(prune=False, epochs=1, batch_size=4, max_length=24)
    a = ft.finetune_encoder(encoder, TEXTS, LABELS, cfg)
    assert list(tmp_path.joinpath("sprint_ft").glob("finetune-*.npz"))
    b = ft.finetune_encoder(encoder, TEXTS, LABELS, cfg)            # from the cache
    np.testing.assert_array_equal(a.head_w, b.head_w)
    assert a.name == b.name and a.name != encoder.name and np.isneginf(a.thresholds).all()
    for (n1, p1), (n2, p2) in zip(a.rm.model.named_parameters(), b.rm.model.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    # the pretrained model is untouched, the fine-tuned copy changed
    diff = [not torch.equal(p, q) for p, q in zip(encoder.model.parameters(), a.rm.model.parameters())]
    assert any(diff)
    batch = models.encode(encoder, TEXTS[:2], 24)
    ref = a.rm.model(**batch).last_hidden_state
    torch.testing.assert_close(models.logits(b.rm, batch), ref.detach())
    # the baseline evaluates with exact attention; a hard SPRINT run with thresholds -inf prunes nothing
    res = ft.evaluate_finetuned(a, TEXTS, LABELS, 24, use_cache=False)
    assert res["pruned"] == 0.0 and res["correct"].shape == (len(TEXTS),)
    fn = sp.SprintAttention(np.full(encoder.n_layers, -np.inf), 0.0, sp.AnalogConfig())
    assert np.array_equal(ft.classify(a, TEXTS, 24, attn_fn=fn), ft.classify(a, TEXTS, 24))


def test_counting_sprint_counts_what_row_stats_count():
    q, k, v = _qkv(seed=4)
    mask = torch.where(torch.as_tensor(causal_mask(q.shape[-2])), 0.0, float("-inf"))[None, None]
    cfg = sp.AnalogConfig(seed=3)
    ref = sp.SprintAttention([0.2], 0.05, cfg, record=True)
    cnt = ft._CountingSprint([0.2], 0.05, cfg)
    torch.testing.assert_close(cnt(q, k, v, mask, 0.25, 0), ref(q, k, v, mask, 0.25, 0))   # same noise draws
    assert cnt.pruned() == pytest.approx(ref.pruned_fraction())
    assert cnt.layer_pruning(1)[0] == pytest.approx(ref.stats[0][0].pruning_ratio)
    assert 0 < cnt.pruned() < 1
