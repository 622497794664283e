"""Token-Picker's claims as the paper states them, with the scenario axes that can decide them.

Paper values (card: docs/papers/token_picker.md): the abstract's 12.1x pruning ratio "without
fine-tuning", 2.6x fewer off-chip memory accesses, 2.3x speedup, 2.4x energy efficiency [paper]; the
unrounded 2.57x / 2.28x / 2.41x [secondary: sciencestack.ai summary of the full text].

The axes (`AXES`), with the option the paper describes:

- **context length** (1K, 2K, 4K, 8K): not on the card (unknown), and it decides the pruning ratio: the
  tokens kept per head at one threshold level off as the context grows, so the ratio grows with it; the
  quality-matched threshold can fall as the context grows, which pulls the other way.
  Each context has its own quality-matched threshold (bisection at 2K, 4K and 8K, at 8K on the
  windows long enough; at 1K the threshold of 2K, its quality checked there).
- **corpus** (Austen + Brown pooled, Austen, Brown): the paper's text is not known; how peaky attention is
  depends on the text. The threshold is matched on the pooled windows; the per-corpus values use it.
- **head accounting** (traffic, speedup, energy): MHA-equivalent (every query head its own K/V, as in
  the multi-head OPT / GPT-2 / LLaMA-1 class the card names [unconfirmed]) vs GQA-native (SmolLM2's
  shared KV heads: a chunk or value is fetched once for its 3 query heads).

The headline scenario rule (`HEADLINE_RULE`): the context and corpus the paper used are unknown, so
the headline stays at 2K (the maximum positions of OPT and LLaMA-1, the model classes the card names)
on the pooled corpora, and the status is judged over every context and corpus (all plausible); the
head accounting is MHA-equivalent (the paper's model class is multi-head).

`claim_kwargs(...)` returns the keyword arguments of `Recorder.claim` for one headline from the
measured pieces; the notebook passes it the values, intervals and scenario values it computed.
"""
from __future__ import annotations

from ..claims import Axis, Deviation

CARD = "docs/papers/token_picker.md"
CONTEXTS = (1024, 2048, 4096, 8192)
HEADLINE_CONTEXT = 2048
CORPUS_OPTIONS = ("Austen+Brown", "Austen", "Brown")


def context_label(c: int) -> str:
    """1024 -> "1K" (the axis option of a context length in tokens)."""
    if int(c) != c or c <= 0:
        raise ValueError(f"a context length is a positive integer, got {c!r}")
    return f"{c // 1024}K" if c % 1024 == 0 else str(int(c))


def context_axis(contexts=CONTEXTS) -> Axis:
    return Axis("context length", tuple(context_label(c) for c in contexts), "unknown", "unknown",
                "at one threshold the tokens kept per head level off as the context grows, so the pruning ratio (and "
                "with it the traffic, speed and energy ratios) grows with the context; the threshold matched to the "
                "quality rule is found per context and can fall as it grows; the paper's context is not on the card")


CORPUS_AXIS = Axis("corpus", CORPUS_OPTIONS, "unknown", "unknown",
                   "how concentrated attention is depends on the text (a Brown window pruned more than the Austen "
                   "windows at the same threshold); the paper's data set is not on the card")
ACCOUNTING_AXIS = Axis("head accounting", ("MHA-equivalent", "GQA-native"), "MHA-equivalent",
                       "unconfirmed: OPT / GPT-2 / LLaMA class models (multi-head) per the card",
                       "a GQA KV head's chunk or value is fetched if any of its 3 query heads needs it, so the union "
                       "prunes less per fetched head than each head alone")

HEADLINE_RULE = ("context and corpus: the paper's are unknown, so the headline stays at 2K tokens (the maximum "
                 "positions of OPT and LLaMA-1, the model classes the card names [unconfirmed]) on the pooled "
                 "Austen + Brown windows, and the status is judged over every context and corpus; head accounting: "
                 "MHA-equivalent (the paper's models are multi-head [unconfirmed])")

#: claim id -> what the paper says: description, value, unit, kind, basis, direction, source, axes keys.
PAPER = {
    "pruning_ratio": dict(description="Pruning ratio without fine-tuning", paper_value=12.1, unit="x", kind="ratio",
                          basis="algorithmic", direction="about", source="paper: abstract",
                          axes=("context", "corpus")),
    "memory_access_reduction": dict(description="Fewer off-chip memory accesses", paper_value=2.6, unit="x",
                                    kind="ratio", basis="algorithmic", direction="about",
                                    source="paper: abstract (2.57x secondary)", axes=("context", "corpus", "accounting")),
    "speedup": dict(description="Average attention speedup", paper_value=2.3, unit="x", kind="ratio", basis="modelled",
                    direction="about", source="paper: abstract (2.28x secondary)", axes=("context", "corpus", "accounting")),
    "energy_efficiency": dict(description="Energy efficiency", paper_value=2.4, unit="x", kind="ratio",
                              basis="modelled", direction="about", source="paper: abstract (2.41x secondary)",
                              axes=("context", "corpus", "accounting")),
}
HEADLINES = tuple(PAPER)


def axes_for(claim_id: str, contexts=CONTEXTS) -> list[Axis]:
    """The axes a headline declares, in order."""
    table = {"context": context_axis(contexts), "corpus": CORPUS_AXIS, "accounting": ACCOUNTING_AXIS}
    return [table[k] for k in PAPER[claim_id]["axes"]]


def headline_scenario(claim_id: str, contexts=CONTEXTS, headline_context: int = HEADLINE_CONTEXT) -> dict:
    """The headline scenario of a claim: the headline context, the pooled corpora, MHA-equivalent."""
    if headline_context not in contexts:
        raise ValueError(f"the headline context {headline_context} is not among the contexts {tuple(contexts)}")
    opts = {"context": context_label(headline_context), "corpus": CORPUS_OPTIONS[0], "accounting": "MHA-equivalent"}
    return {a.name: opts[k] for k, a in zip(PAPER[claim_id]["axes"], axes_for(claim_id, contexts))}


def scenario_key(claim_id: str, context: int, corpus: str = CORPUS_OPTIONS[0], accounting: str = "MHA-equivalent") -> dict:
    """{axis name: option} of one scenario of a claim."""
    opts = {"context": context_label(context), "corpus": corpus, "accounting": accounting}
    return {a.name: opts[k] for k, a in zip(PAPER[claim_id]["axes"], axes_for(claim_id))}


def variation(n_windows: int, corpora=("Austen", "Brown")) -> dict:
    """What the windows-as-units interval covers and what it does not."""
    return dict(unit=f"text windows ({n_windows}, from {' and '.join(corpora)}; each window's decode steps pooled)",
                covers=["text windows", f"corpora ({', '.join(corpora)}: windows of both are resampled together)"],
                not_covered=["model (SmolLM2-135M only)", "context length (a scenario axis)",
                             "the threshold's own uncertainty (the matched threshold is held fixed)",
                             "decode-step positions beyond the last steps of each window"])


def deviations(*, model: str, n_layers: int, n_heads: int, n_kv_heads: int, d_head: int, k_bits: int, chunk_bits: int,
               v_bits: int, contexts, headline_context: int, n_windows: int, rows: int, quality_rule_pct: float) -> list[Deviation]:
    """Every difference from the paper's setup that does not depend on the results."""
    lo, hi = min(contexts), max(contexts)
    return [
        Deviation("model", "OPT / GPT-2 / LLaMA class, multi-head",
                  f"{model} ({n_layers} layers, {n_heads} query / {n_kv_heads} KV heads, d_head {d_head})", "unconfirmed",
                  "unknown: a 135M model's attention may be more or less concentrated than the paper's models'"),
        Deviation("context length", "not stated",
                  f"{headline_context} tokens at the headline, {lo}-{hi} as a scenario axis", "unconfirmed",
                  "mixed: the pruning ratio at the matched threshold changes with the context (scenario axis), so the "
                  "paper's unknown context can move its value either way"),
        Deviation("text", "not stated", f"{n_windows} windows of running text, Austen novels and Brown genres",
                  "unconfirmed", "unknown: text type changes how peaky attention is (corpus axis)"),
        Deviation("estimator details",
                  "Eq. 4-5: MSB-first two's-complement chunks, two-sided bounds, denominator of lower-bound exponentials, "
                  "out of order",
                  f"denominator over every allowed token (pruned ones keep their last lower bound), pruning re-tested "
                  f"after every chunk, {k_bits}-bit keys in {chunk_bits}-bit chunks, {v_bits}-bit values, one scale per token",
                  "secondary: technical audit note quoting the paper's equations (paper card)",
                  "unknown: the exact bookkeeping of the paper's scoreboard is not known"),
        Deviation("threshold / quality rule", "a threshold 'without fine-tuning'; metric and value not stated",
                  f"per context, the largest threshold (bisection) whose perplexity change's 95% upper end over "
                  f"{n_windows} windows x {rows} decode steps is at most {quality_rule_pct:g}% (interval rule; the "
                  "point rule beside it)", "unconfirmed",
                  "mixed: a looser rule raises the ratio, a tighter one lowers it (swept)"),
    ]


def claim_kwargs(claim_id: str, *, reproduced: float, interval, assumption_range: dict, scenarios: list,
                 deviations: list, operating_point: dict, averaging: str, variation: dict, params: dict, note: str,
                 contexts=CONTEXTS, headline_context: int = HEADLINE_CONTEXT) -> dict:
    """Keyword arguments of `Recorder.claim` for one headline (claim id first)."""
    p = PAPER[claim_id]
    return dict(claim_id=claim_id, description=p["description"], paper_value=p["paper_value"], reproduced=reproduced,
                unit=p["unit"], kind=p["kind"], basis=p["basis"], direction=p["direction"], interval=interval,
                assumption_range=assumption_range, deviations=deviations, operating_point=operating_point,
                averaging=averaging, variation=variation, params={**params, "paper_source": p["source"]}, note=note,
                axes=axes_for(claim_id, contexts), scenarios=scenarios,
                headline_scenario=headline_scenario(claim_id, contexts, headline_context), headline_rule=HEADLINE_RULE)
