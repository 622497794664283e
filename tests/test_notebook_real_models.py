"""notebooks/00_real_models.ipynb runs end to end in the quick profile and records sane numbers.

Executed through papermill into a temporary folder (ATTNLIB_STAGE, via the `run_notebook` fixture in
conftest.py), so the committed figures/ and results/ are never touched.
"""
from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.models]

FIGURES = ("real_models_attention_maps", "real_models_first_token_mass", "real_models_probe_accuracy")


def test_real_models_notebook_quick(run_notebook):
    results, figures = run_notebook("00_real_models")
    assert results is not None, "the notebook saved no results JSON"
    assert results["notebook"] == "00_real_models" and results["profile"] == "quick"
    values = {v["name"]: v for v in results["values"]}
    for text in ("brown", "austen"):
        ppl = values[f"perplexity_{text}"]["value"]
        assert math.isfinite(ppl) and 1 < ppl < 1e4
        assert 0.1 < values[f"bits_per_byte_{text}"]["value"] < 10
        assert values[f"perplexity_{text}"]["basis"] == "algorithmic"
    for name in ("polarity", "newsgroups", "spam"):
        assert 0 <= values[f"probe_accuracy_{name}"]["value"] <= 1
        assert 0 <= values[f"majority_rate_{name}"]["value"] <= 1
    assert 0 < values["first_token_mass_max_smollm2"]["value"] <= 1
    assert values["load_seconds_encoder"]["basis"] == "measured"
    for name in FIGURES:
        assert name in figures and figures[name].stat().st_size > 10_000, f"figure {name}.png missing or empty"
