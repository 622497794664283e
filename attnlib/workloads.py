"""Attention shapes of the models the papers evaluate and of the real models loaded here.

`workload(name)` returns a `ModelShape`; unknown names raise a KeyError that lists the known ones.
Sources: the models' published configurations (Devlin et al. 2019 for BERT; Dai et al. 2019 for
Transformer-XL (wt103); Raffel et al. 2020 for T5; Conneau & Lample 2019 for XLM (en-2048); Radford et
al. 2019 for GPT-2; Zhang et al. 2022 for OPT; the Hugging Face configs of the real models listed in
docs/models_and_data.md). The FLAT grid (BERT/TrXL/T5/XLM) uses the d_model/heads/d_head that the
FuseMax artifact models for FLAT.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """Shapes of one transformer. Sizes in elements (not bytes)."""

    name: str
    d_model: int
    heads: int
    d_head: int
    layers: int
    ffn: int
    kv_heads: int | None = None  # None: same as heads (no GQA)
    max_positions: int | None = None
    family: str = ""
    source: str = ""

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    def kv_cache_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """Bytes of K and V cached per token over all layers."""
        return 2 * self.layers * self.n_kv_heads * self.d_head * bytes_per_element


def _m(name, d_model, heads, d_head, layers, ffn, family, source, kv_heads=None, max_positions=None):
    return ModelShape(name, d_model, heads, d_head, layers, ffn, kv_heads, max_positions, family, source)


_CATALOGUE = [
    _m("bert-base", 768, 12, 64, 12, 3072, "encoder", "Devlin et al. 2019", max_positions=512),
    _m("bert-large", 1024, 16, 64, 24, 4096, "encoder", "Devlin et al. 2019", max_positions=512),
    _m("trxl", 1024, 16, 64, 18, 4096, "decoder", "Dai et al. 2019 (wt103); FLAT grid shape"),
    _m("flaubert", 1024, 16, 64, 24, 4096, "encoder",
       "Le et al. 2020 (FlauBERT large); FLAT grid shape = TrXL's (FuseMax MICRO'24 §VI-A)"),
    _m("t5", 512, 8, 64, 6, 2048, "encoder-decoder", "Raffel et al. 2020 (T5-small); FLAT grid shape"),
    _m("xlm", 2048, 16, 128, 12, 8192, "encoder", "Conneau & Lample 2019 (XLM en-2048); FLAT grid shape"),
    _m("gpt2", 768, 12, 64, 12, 3072, "decoder", "Radford et al. 2019", max_positions=1024),
    _m("gpt2-medium", 1024, 16, 64, 24, 4096, "decoder", "Radford et al. 2019", max_positions=1024),
    _m("gpt2-large", 1280, 20, 64, 36, 5120, "decoder", "Radford et al. 2019", max_positions=1024),
    _m("gpt2-xl", 1600, 25, 64, 48, 6400, "decoder", "Radford et al. 2019", max_positions=1024),
    _m("opt-125m", 768, 12, 64, 12, 3072, "decoder", "Zhang et al. 2022", max_positions=2048),
    _m("opt-350m", 1024, 16, 64, 24, 4096, "decoder", "Zhang et al. 2022", max_positions=2048),
    _m("opt-1.3b", 2048, 32, 64, 24, 8192, "decoder", "Zhang et al. 2022", max_positions=2048),
    _m("opt-2.7b", 2560, 32, 80, 32, 10240, "decoder", "Zhang et al. 2022", max_positions=2048),
    _m("opt-6.7b", 4096, 32, 128, 32, 16384, "decoder", "Zhang et al. 2022", max_positions=2048),
    _m("opt-13b", 5120, 40, 128, 40, 20480, "decoder", "Zhang et al. 2022", max_positions=2048),
    # real models loaded offline in this workbook
    _m("minilm-l6", 384, 12, 32, 6, 1536, "encoder", "all-MiniLM-L6-v2 config", max_positions=512),
    _m("smollm2-135m", 576, 9, 64, 30, 1536, "decoder", "SmolLM2-135M config (GQA 9q/3kv)", kv_heads=3,
       max_positions=8192),
    _m("gemma3-270m", 640, 4, 256, 18, 2048, "decoder", "Gemma 3 270M config (GQA 4q/1kv)", kv_heads=1,
       max_positions=32768),
]
CATALOGUE: dict[str, ModelShape] = {m.name: m for m in _CATALOGUE}

#: The four models of FLAT's evaluation grid in the FuseMax artifact.
FLAT_MODELS = ("bert-base", "trxl", "t5", "xlm")
#: The five models FLAT evaluated (FuseMax §VI-A: "the same models used by FLAT"); FlauBERT has TrXL's shape.
FLAT_EVAL_MODELS = ("bert-base", "trxl", "flaubert", "t5", "xlm")


def workload(name: str) -> ModelShape:
    """Shape of model ``name`` (case-insensitive)."""
    key = name.lower()
    if key == "bert":
        key = "bert-base"
    if key not in CATALOGUE:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(CATALOGUE)}")
    return CATALOGUE[key]
