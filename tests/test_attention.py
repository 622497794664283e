"""Reference attention against torch's scaled_dot_product_attention and closed forms."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlib.attention import (attention, attention_cost, attention_torch, causal_mask, decode_cost, decode_step,
                               decode_step_torch, padding_mask, softmax)

rng = np.random.default_rng(0)


def _qkv(b=2, h=3, tq=5, tk=7, d=8, dv=6):
    return (rng.standard_normal((b, h, tq, d)), rng.standard_normal((b, h, tk, d)),
            rng.standard_normal((b, h, tk, dv)))


def test_matches_torch_sdpa():
    q, k, v = _qkv()
    ref = F.scaled_dot_product_attention(*(torch.tensor(t) for t in (q, k, v))).numpy()
    np.testing.assert_allclose(attention(q, k, v), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(attention_torch(*(torch.tensor(t) for t in (q, k, v))).numpy(), ref, atol=1e-12)


def test_causal_matches_torch_sdpa():
    q, k, v = _qkv(tq=6, tk=6)
    ref = F.scaled_dot_product_attention(*(torch.tensor(t) for t in (q, k, v)), is_causal=True).numpy()
    np.testing.assert_allclose(attention(q, k, v, causal=True), ref, atol=1e-12)
    np.testing.assert_allclose(attention_torch(*(torch.tensor(t) for t in (q, k, v)), causal=True).numpy(), ref,
                               atol=1e-12)


def test_padding_mask_matches_sdpa_and_ignores_padded_values():
    q, k, v = _qkv(b=2, tk=7)
    mask = padding_mask([4, 7], 7)
    ref = F.scaled_dot_product_attention(*(torch.tensor(t) for t in (q, k, v)),
                                         attn_mask=torch.tensor(mask)).numpy()
    out = attention(q, k, v, mask=mask)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    v2 = v.copy()
    v2[0, :, 4:] = 1e6  # padded positions of sequence 0 must not matter
    np.testing.assert_allclose(attention(q, k, v2, mask=mask)[0], out[0], atol=1e-12)


def test_additive_mask_equals_boolean_mask():
    q, k, v = _qkv()
    m = rng.random((5, 7)) > 0.3
    m[:, 0] = True
    add = np.where(m, 0.0, -np.inf)
    np.testing.assert_allclose(attention(q, k, v, mask=m), attention(q, k, v, mask=add), atol=1e-12)


def test_softmax_stable_and_fully_masked_rows():
    x = np.array([[1000.0, 1001.0, 999.0], [-np.inf, -np.inf, -np.inf]])
    p = softmax(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[0].sum(), 1.0)
    np.testing.assert_allclose(p[0], np.exp([-1, 0, -2]) / np.exp([-1, 0, -2]).sum())
    assert np.all(p[1] == 0)


def test_single_key_and_uniform_closed_forms():
    q, k, v = _qkv(tk=1)
    np.testing.assert_allclose(attention(q, k, v), np.broadcast_to(v, (2, 3, 5, 6)))
    # all-equal keys -> uniform weights -> output is the mean of V
    q, _, v = _qkv()
    k = np.ones((2, 3, 7, 8))
    np.testing.assert_allclose(attention(q, k, v), np.broadcast_to(v.mean(-2, keepdims=True), (2, 3, 5, 6)))


def test_decode_step_equals_last_row_of_causal_attention():
    q, k, v = _qkv(tq=7, tk=7)
    full = attention(q, k, v, causal=True)
    np.testing.assert_allclose(decode_step(q[..., -1, :], k, v), full[..., -1, :], atol=1e-12)
    out = decode_step_torch(*(torch.tensor(t) for t in (q[..., -1, :], k, v)))
    np.testing.assert_allclose(out.numpy(), full[..., -1, :], atol=1e-12)


def test_probabilities_sum_to_one():
    q, k, v = _qkv()
    _, p = attention(q, k, v, return_probs=True)
    np.testing.assert_allclose(p.sum(-1), 1.0)


@pytest.mark.parametrize("bad", [
    lambda q, k, v: attention(q[..., :4], k, v),          # width mismatch
    lambda q, k, v: attention(q, k, v[..., :3, :]),        # K/V token mismatch
    lambda q, k, v: attention(q, k[..., :0, :], v[..., :0, :]),  # empty cache
    lambda q, k, v: attention(q, k, v, scale=-1.0),
    lambda q, k, v: attention(np.full_like(q, np.nan), k, v),
])
def test_bad_input_raises(bad):
    with pytest.raises(ValueError):
        bad(*_qkv())


def test_causal_mask_shape_rule():
    np.testing.assert_array_equal(causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])
    with pytest.raises(ValueError):
        causal_mask(5, 3)


def test_cost_closed_forms():
    b, h, n, d = 2, 12, 512, 64
    c = attention_cost(b, h, n, n, d, bytes_per_element=2)
    assert c.flops == 4 * b * h * n * n * d
    assert c.bytes_qkvo == 4 * b * h * n * d * 2
    assert c.bytes_scores == 4 * b * h * n * n * 2
    # causal counts the lower triangle including the diagonal
    cc = attention_cost(1, 1, n, n, d, causal=True)
    assert cc.flops == 4 * (n * (n + 1) / 2) * d
    # decode: one query row; intensity ~ 1 FLOP/byte at 16-bit, independent of context
    dc = decode_cost(1, h, 4096, d)
    assert dc.flops == 4 * h * 4096 * d
    assert math.isclose(dc.intensity, 4 * 4096 * d / (2 * (2 * d + 2 * 4096 * d)))
    # GQA shares K/V: fewer bytes, same flops
    g = decode_cost(1, 9, 1024, 64, kv_heads=3)
    assert g.flops == decode_cost(1, 9, 1024, 64).flops and g.bytes_qkvo < decode_cost(1, 9, 1024, 64).bytes_qkvo
    with pytest.raises(ValueError):
        attention_cost(0, 1, 1, 1, 1)
    with pytest.raises(ValueError):
        decode_cost(1, 9, 16, 64, kv_heads=2)
