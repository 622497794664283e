import pytest

from attnlib.workloads import FLAT_MODELS, workload


def test_flat_grid_shapes():
    # d_model, heads, d_head of FLAT's grid as modelled by the FuseMax artifact
    assert [(workload(m).d_model, workload(m).heads, workload(m).d_head) for m in FLAT_MODELS] == \
        [(768, 12, 64), (1024, 16, 64), (512, 8, 64), (2048, 16, 128)]


def test_real_models_and_gqa():
    s = workload("smollm2-135m")
    assert (s.heads, s.n_kv_heads, s.d_head, s.layers) == (9, 3, 64, 30)
    assert s.kv_cache_bytes_per_token(2) == 2 * 30 * 3 * 64 * 2
    assert workload("MiniLM-L6").d_head * workload("minilm-l6").heads == 384


def test_unknown_model_lists_known():
    with pytest.raises(KeyError, match="known models: .*bert-base"):
        workload("gpt-7")
