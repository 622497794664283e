"""The league's real workloads and the dense, unfused work of one inference unit on each.

A workload is a real model at a stated length and phase, with its quality measure:

- ``enc-128`` / ``enc-512``: all-MiniLM-L6-v2 encoding an e-mail (one forward), accuracy of the
  project's linear spam probe (`attnlib.evaluate`);
- ``dec-prefill-2K``: SmolLM2-135M processing a 2,048-token prompt (one causal forward), perplexity;
- ``dec-decode-2K`` / ``dec-decode-8K``: one SmolLM2 decode step against a 2,048 / 8,192-token KV
  cache, perplexity of teacher-forced decode steps.

`dense_work(w)` counts, for one unit (a forward or a decode step), what the unfused dense baseline
does: QK^T and PV multiply-accumulates, softmax steps, Q/K/V read and O written once, and the logits
of a head written out and read back twice (logits -> softmax -> probabilities -> PV) when one head's
Nq x Nk tile does not fit in half the on-chip buffer (ASSUMPTION: the other half holds Q/K/V tiles).
`other_work(w)` is the rest of the model (projections, FFN, LM head) with its weights read once per
unit, for end-to-end numbers. Elements are 16 bit (the platforms' width).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..workloads import workload as model_shape
from .template import Template, Work

BYTES = 2  # 16-bit elements
#: SmolLM2-135M vocabulary (its config) for the LM head of the decoder workloads.
SMOLLM2_VOCAB = 49152


@dataclass(frozen=True)
class Workload:
    """One real workload: ``model`` a name of `attnlib.workloads`, ``phase`` "encode" / "prefill" /
    "decode", ``context`` tokens (the sequence for encode / prefill, the KV cache for decode),
    ``quality`` "accuracy" (points) or "perplexity" (%), ``text`` what the quality is measured on."""

    key: str
    label: str
    model: str
    phase: str
    context: int
    quality: str
    text: str

    def __post_init__(self):
        if self.phase not in ("encode", "prefill", "decode"):
            raise ValueError(f"workload {self.key!r}: unknown phase {self.phase!r}")
        if self.quality not in ("accuracy", "perplexity"):
            raise ValueError(f"workload {self.key!r}: unknown quality measure {self.quality!r}")
        if int(self.context) != self.context or self.context < 2:
            raise ValueError(f"workload {self.key!r}: context must be an integer >= 2, got {self.context}")
        model_shape(self.model)  # raises on an unknown model

    @property
    def shape(self):
        return model_shape(self.model)

    @property
    def rows(self) -> int:
        """Query rows of one unit: the whole sequence for encode / prefill, one for a decode step."""
        return 1 if self.phase == "decode" else self.context

    @property
    def causal(self) -> bool:
        return self.phase != "encode"


def workloads(profile: str = "full") -> dict[str, Workload]:
    """The league's workloads; the quick profile shrinks every length (a smoke run)."""
    enc, dec = "accuracy on labelled SpamAssassin e-mails (probe)", "perplexity on Austen and Brown windows"
    if profile == "quick":
        spec = [("enc-64", "encoder, 64 tokens", "minilm-l6", "encode", 64, "accuracy", enc),
                ("dec-prefill-256", "decoder prefill, 256 tokens", "smollm2-135m", "prefill", 256, "perplexity", dec),
                ("dec-decode-256", "decoder decode, 256-token context", "smollm2-135m", "decode", 256, "perplexity",
                 dec)]
    else:
        spec = [("enc-128", "encoder, 128 tokens", "minilm-l6", "encode", 128, "accuracy", enc),
                ("enc-512", "encoder, 512 tokens", "minilm-l6", "encode", 512, "accuracy", enc),
                ("dec-prefill-2K", "decoder prefill, 2K tokens", "smollm2-135m", "prefill", 2048, "perplexity", dec),
                ("dec-decode-2K", "decoder decode, 2K context", "smollm2-135m", "decode", 2048, "perplexity", dec),
                ("dec-decode-8K", "decoder decode, 8K context", "smollm2-135m", "decode", 8192, "perplexity", dec)]
    return {s[0]: Workload(*s) for s in spec}


@dataclass(frozen=True)
class DenseCounts:
    """The dense attention of one unit, summed over layers and heads: ``scores`` allowed (query, key)
    pairs; bytes of Q, K, V read and O written; ``logit_tile_bytes`` one head's logits tile."""

    scores: float
    d_head: int
    q_bytes: float
    k_bytes: float
    v_bytes: float
    o_bytes: float
    logit_tile_bytes: float


def dense_counts(w: Workload) -> DenseCounts:
    s = w.shape
    nq, nk = w.rows, w.context
    per_head = nq * nk if not w.causal or w.phase == "decode" else nk * (nk + 1) / 2
    heads = s.layers * s.heads
    kv = s.layers * s.n_kv_heads
    return DenseCounts(scores=float(heads * per_head), d_head=s.d_head,
                       q_bytes=float(heads * nq * s.d_head * BYTES), k_bytes=float(kv * nk * s.d_head * BYTES),
                       v_bytes=float(kv * nk * s.d_head * BYTES), o_bytes=float(heads * nq * s.d_head * BYTES),
                       logit_tile_bytes=float(nq * nk * BYTES))


def spills(c: DenseCounts, tpl: Template) -> bool:
    """Whether an unfused kernel writes one head's logits out (its tile exceeds half the buffer)."""
    return c.logit_tile_bytes > tpl.acc.buffer.capacity_bytes / 2


def attention_work(c: DenseCounts, tpl: Template, *, keep: float = 1.0, kv_read: float = 1.0,
                   fused: bool = False, extra: Work = Work()) -> Work:
    """Attention work with a fraction ``keep`` of the scores computed exactly (QK^T, softmax, PV),
    a fraction ``kv_read`` of K and V read from main memory, and the logits spilled unless ``fused``
    (FLAT) or they fit; ``extra`` adds a technique's own work (search, in-memory scoring)."""
    for name, f in (("keep", keep), ("kv_read", kv_read)):
        if not 0 <= f <= 1:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {f}")
    s = c.scores * keep
    spill = 0.0 if fused or not spills(c, tpl) else 2 * s * BYTES
    qkvo = c.q_bytes + kv_read * (c.k_bytes + c.v_bytes) + c.o_bytes
    return Work(macs=2 * s * c.d_head, vector_ops=3 * s,
                read_bytes=c.q_bytes + kv_read * (c.k_bytes + c.v_bytes) + spill,
                write_bytes=c.o_bytes + spill, buffer_bytes=qkvo + 4 * s * BYTES) + extra


def other_work(w: Workload) -> Work:
    """Projections, FFN (gated for the decoder: three matrices) and the decoder's LM head for one unit:
    every weight read once, one MAC per weight per row (activations stay on chip: ASSUMPTION)."""
    s = w.shape
    q_dim, kv_dim = s.heads * s.d_head, s.n_kv_heads * s.d_head
    ffn_mats = 3 if s.family == "decoder" else 2
    per_layer = s.d_model * (q_dim + 2 * kv_dim) + q_dim * s.d_model + ffn_mats * s.d_model * s.ffn
    weights = s.layers * per_layer + (SMOLLM2_VOCAB * s.d_model if s.family == "decoder" else 0)
    return Work(macs=float(weights * w.rows), read_bytes=float(weights * BYTES),
                buffer_bytes=float(weights * BYTES))
