"""SPRINT's learned thresholds (the paper's operating point): fine-tune the encoder with a
classification head and ONE learnable pruning threshold per layer, then prune hard through the
in-memory scoring model.

The paper's group learns its thresholds during fine-tuning (LeOPArd, ISCA'22: a per-layer threshold,
a soft differentiable regulariser in the loss, co-optimised with the weights). Here:

* **training** (`finetune_encoder`): every attention logit s_ij = q_i.k_j * scale passes a soft gate
  g_ij = sigmoid((s_ij - theta_l) / tau) (`soft_gate`); the attention is
  softmax_j(s_ij + log g_ij) (`gated_attention`), i.e. the softmax of the gated exponentials
  g_ij * exp(s_ij), renormalised. As tau -> 0 the gate becomes the hard keep mask s_ij >= theta_l and
  the attention becomes exact attention over the survivors (`algorithm.sprint_attention`); with
  theta_l = -inf nothing is gated and it is exact attention. The loss is the task's cross-entropy
  plus ``reg`` x the mean over layers of the soft keep fraction (mean gate over the allowed pairs of
  real queries): a larger ``reg`` rewards pruning more.
* **the baseline** is the same fine-tuning with no gate (``prune=False``): the accuracy reference.
* **inference** (`evaluate_finetuned`): the fine-tuned weights with the learned thresholds in a
  `SprintAttention` (4-bit MSB keys in the crossbar, analog noise, margin = z x the analog error's
  RMS on the fine-tuned model), a hard prune with exact recomputation of the survivors.

Everything expensive is cached by its inputs with `attnlib.cache.cached` under ``.cache/sprint_ft``:
the fine-tuned state (the changed tensors as numpy arrays, the head and the thresholds) and the
per-item test correctness. Nothing here is committed as a binary: the cache is regenerated from
the shipped data and the installed model by `finetune_encoder`.

The model: mean pooling over the real tokens of the last hidden state, then a linear head
(d_model -> classes). The word/position embeddings stay frozen (ASSUMPTION, saves optimiser time;
stated in the notebook); dropout off (the model stays in eval mode: deterministic runs).
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .algorithm import AnalogConfig, Calibrator, SprintAttention, allowed_from_mask

__all__ = ["soft_gate", "gated_attention", "GatedAttention", "FinetuneConfig", "FinetunedModel", "finetune_encoder",
           "evaluate_finetuned", "learned_attention", "finetuned_model", "classify", "ft_code_version"]


# ----------------------------------------------------------------------------- the soft gate
def soft_gate(scores: torch.Tensor, threshold, temperature: float) -> torch.Tensor:
    """sigmoid((scores - threshold) / temperature), same shape as ``scores`` (scaled scores q.k*scale).

    threshold: scalar (float or 0-d tensor, -inf allowed: gate 1 everywhere); temperature > 0 in score
    units."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.sigmoid((scores - threshold) / temperature)


def gated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, scale: float, threshold,
                    temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft-gated attention softmax_j(s_ij + log g_ij) v, with s = q k^T * scale and g = `soft_gate`.

    q: (B, H, Tq, d); k, v: (B, H, Tk, d); mask: additive float (or bool) mask broadcastable to
    (B, H, Tq, Tk), or None. Returns (out (B, H, Tq, d), gate (B, H, Tq, Tk), allowed (B, H, Tq, Tk)).
    Differentiable in q, k, v and ``threshold``.
    """
    s = (q @ k.transpose(-1, -2)) * scale
    allowed = allowed_from_mask(None if mask is None else mask.detach(), s.shape)
    g = soft_gate(s, threshold, temperature)
    logit = s + torch.nn.functional.logsigmoid((s - threshold) / temperature)
    logit = logit.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(logit, dim=-1).nan_to_num(0.0)
    return p @ v, g, allowed


class GatedAttention:
    """An `attnlib.models` AttnFn for training: soft-gated attention with per-layer learnable thresholds.

    thresholds: tensor (L,) (a leaf with requires_grad for training; -inf entries gate nothing);
    temperature: gate temperature (score units). After a forward pass ``keep_fractions[l]`` is layer
    l's soft keep fraction (mean gate over allowed pairs of real query rows), a differentiable 0-d tensor.
    """

    def __init__(self, thresholds: torch.Tensor, temperature: float):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.thresholds = thresholds
        self.temperature = float(temperature)
        self.keep_fractions: dict[int, torch.Tensor] = {}

    def __call__(self, q, k, v, mask, scale, layer):
        out, g, allowed = gated_attention(q, k, v, mask, scale, self.thresholds[layer], self.temperature)
        tq, tk = allowed.shape[-2:]
        # real query rows: in self-attention query i is real iff key i is allowed for it
        rows = torch.diagonal(allowed, dim1=-2, dim2=-1) if tq == tk else allowed.any(-1)
        w = allowed & rows.unsqueeze(-1)
        self.keep_fractions[layer] = (g * w).sum() / w.sum().clamp_min(1)
        return out


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run (every field enters the cache key).

    prune: learn thresholds with the soft gate (False: plain fine-tuning, the accuracy baseline);
    reg: regulariser strength lambda (loss += reg x mean soft keep fraction over layers);
    temperature: gate temperature in scaled-score units; init_mass: thresholds start at the frozen
        model's calibration for this kept fraction of exact attention mass on the first training batch
        (`Calibrator`), so the gate starts near the scores that matter;
    epochs, batch_size, lr (weights and head, AdamW), lr_threshold (Adam on the thresholds),
    max_length (tokens per text, truncation), seed (head init, batch order).
    """

    prune: bool = True
    reg: float = 0.0
    temperature: float = 0.5
    init_mass: float = 0.995
    epochs: int = 1
    batch_size: int = 16
    lr: float = 5e-5
    lr_threshold: float = 0.1
    max_length: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.reg < 0:
            raise ValueError(f"reg must be >= 0, got {self.reg}")
        if not self.prune and self.reg != 0:
            raise ValueError("a run without pruning (prune=False) takes no regulariser (reg must be 0)")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.init_mass <= 1:
            raise ValueError(f"init_mass must lie in (0, 1], got {self.init_mass}")
        for name in ("epochs", "batch_size", "max_length"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4 tokens, got {self.max_length}")


def ft_code_version() -> str:
    """Digest of the code that decides a fine-tuning run's outcome (this module, the algorithm, models)."""
    from .. import models
    from . import algorithm

    h = hashlib.sha256()
    for mod in (algorithm, models):
        h.update(inspect.getsource(mod).encode())
    h.update(inspect.getsource(inspect.getmodule(ft_code_version)).encode())
    return h.hexdigest()[:16]


def _digest(texts, labels) -> str:
    h = hashlib.sha256("\x1f".join(texts).encode("utf-8"))
    h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    return h.hexdigest()[:24]


# ----------------------------------------------------------------------------- the fine-tuned model
@dataclass
class FinetunedModel:
    """A fine-tuned encoder: ``rm`` (a `RealModel` with its own copy of the weights and a name that
    identifies the run, so SPRINT runs on it are cached apart from the pretrained model), the linear
    head (``head_w`` (C, d_model), ``head_b`` (C,)), the learned per-layer thresholds (L,) on the scaled
    score (all -inf for the baseline), the training ``history`` (per-step loss and mean soft keep
    fraction) and the ``train_seconds`` the run took when it was computed (CPU, this machine)."""

    rm: object
    head_w: np.ndarray
    head_b: np.ndarray
    thresholds: np.ndarray
    history: dict
    train_seconds: float
    key: dict

    @property
    def name(self) -> str:
        return self.rm.name


def _pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("embeddings.") and not n.startswith("pooler.")]


def _train(rm, train_texts, train_labels, n_classes: int, cfg: FinetuneConfig, progress: bool,
           start: "FinetunedModel | None" = None) -> dict:
    from tqdm.auto import tqdm

    from .. import models

    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(rm.model if start is None else start.rm.model)
    model.eval()                                            # no dropout: deterministic
    trainable = dict(_trainable(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    work = replace(rm, model=model)
    head = torch.nn.Linear(rm.d_model, n_classes)
    if start is not None:
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(start.head_w))
            head.bias.copy_(torch.as_tensor(start.head_b))
    rng = np.random.default_rng(cfg.seed)
    n = len(train_texts)
    order = np.concatenate([rng.permutation(n) for _ in range(cfg.epochs)])
    batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
    L = rm.n_layers
    if cfg.prune:
        first = models.encode(rm, [train_texts[i] for i in batches[0]], cfg.max_length)
        init = Calibrator(models.capture(rm if start is None else start.rm, first)).thresholds(cfg.init_mass)
        thr = torch.tensor(init, dtype=torch.float32, requires_grad=True)
    else:
        init = np.full(L, -np.inf)
        thr = torch.full((L,), -math.inf)
    params = list(trainable.values()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    opt_t = torch.optim.Adam([thr], lr=cfg.lr_threshold) if cfg.prune else None
    fn = GatedAttention(thr, cfg.temperature) if cfg.prune else None
    y_all = torch.as_tensor(np.asarray(train_labels, dtype=np.int64))
    hist = {"loss": [], "keep": [], "thresholds": []}
    t0 = time.perf_counter()
    for b in tqdm(batches, desc=f"fine-tune reg={cfg.reg:g}" if cfg.prune else "fine-tune baseline",
                  disable=not progress, leave=False):
        batch = models.encode(rm, [train_texts[i] for i in b], cfg.max_length)
        if fn is not None:
            fn.keep_fractions.clear()
            with models.replaced_attention(work, fn):
                hidden = model(**batch, use_cache=False).last_hidden_state
            keep = torch.stack([fn.keep_fractions[l] for l in range(L)])
        else:
            hidden = model(**batch, use_cache=False).last_hidden_state
            keep = torch.ones(L)
        task = torch.nn.functional.cross_entropy(head(_pool(hidden, batch["attention_mask"])), y_all[b])
        loss = task + cfg.reg * keep.mean() if cfg.prune else task
        opt.zero_grad()
        if opt_t is not None:
            opt_t.zero_grad()
        loss.backward()
        opt.step()
        if opt_t is not None:
            opt_t.step()
        hist["loss"].append(float(task.detach()))
        hist["keep"].append(float(keep.detach().mean()))
        hist["thresholds"].append(thr.detach().numpy().copy())
    secs = time.perf_counter() - t0
    state = {n: p.detach().numpy().copy() for n, p in _trainable(model)}
    return {"state": state, "head_w": head.weight.detach().numpy().copy(), "head_b": head.bias.detach().numpy().copy(),
            "thresholds": thr.detach().numpy().astype(np.float64), "init": np.asarray(init, dtype=np.float64),
            "loss": np.asarray(hist["loss"]), "keep": np.asarray(hist["keep"]),
            "threshold_trace": np.asarray(hist["thresholds"]), "seconds": float(secs)}


def _run_key(rm, train_texts, train_labels, cfg: FinetuneConfig) -> dict:
    return dict(model=rm.name, train=_digest(train_texts, train_labels), n_train=len(train_texts), cfg=asdict(cfg),
                code=ft_code_version())


def finetune_encoder(rm, train_texts, train_labels, cfg: FinetuneConfig, *, n_classes: int | None = None,
             start: FinetunedModel | None = None, use_cache: bool = True, progress: bool = False) -> FinetunedModel:
    """Fine-tune a COPY of the encoder ``rm`` (``rm`` itself is unchanged) on (train_texts, train_labels)
    with the classification head, and learn one threshold per layer when ``cfg.prune``.

    start: continue from a fine-tuned model (its weights and head; e.g. the baseline, for a second
    stage that learns the thresholds); the thresholds still start from the calibration of ``start``
    on the first training batch. None: from the pretrained ``rm`` with a freshly initialised head.

    train_labels: int array (N,) with classes 0..C-1. Cached under ``.cache/sprint_ft`` by (model,
    training data digest, cfg, code version); the cached state is the changed tensors as numpy arrays.
    Returns a `FinetunedModel` whose ``rm.name`` names the run."""
    if rm.kind != "encoder":
        raise ValueError("finetune_encoder needs an encoder model (a classification head on pooled embeddings)")
    if isinstance(train_texts, str) or not len(train_texts):
        raise ValueError("train_texts must be a non-empty list of strings")
    labels = np.asarray(train_labels, dtype=np.int64)
    if len(labels) != len(train_texts):
        raise ValueError(f"{len(train_texts)} texts but {len(labels)} labels")
    C = int(n_classes if n_classes is not None else labels.max() + 1)
    if labels.min() < 0 or labels.max() >= C or C < 2:
        raise ValueError(f"labels must lie in 0..C-1 with C >= 2 classes, got {labels.min()}..{labels.max()} (C={C})")
    key = dict(_run_key(rm, list(train_texts), labels, cfg), classes=C, start=None if start is None else start.name)
    if start is not None and (start.head_w.shape[0] != C or start.rm.n_layers != rm.n_layers):
        raise ValueError(f"start model has {start.head_w.shape[0]} classes / {start.rm.n_layers} layers, "
                         f"expected {C} / {rm.n_layers}")

    def compute():
        return _train(rm, list(train_texts), labels, C, cfg, progress, start)

    if use_cache:
        from ..cache import cached

        res = cached("sprint_ft", "finetune", key, compute)
    else:
        res = compute()
    return finetuned_model(rm, res, key)


def finetuned_model(rm, res: dict, key: dict) -> FinetunedModel:
    """Rebuild a `FinetunedModel` from the stored result of `finetune_encoder` (numpy state) on a copy of ``rm``."""
    model = copy.deepcopy(rm.model)
    sd = {n: torch.as_tensor(np.asarray(a)) for n, a in res["state"].items()}
    missing = set(sd) - set(dict(model.named_parameters()))
    if missing:
        raise ValueError(f"stored state names unknown parameters: {sorted(missing)[:3]}")
    model.load_state_dict(sd, strict=False)
    model.eval()
    digest = hashlib.sha256(str(sorted(key.items())).encode()).hexdigest()[:10]
    tag = "ft-prune" if key["cfg"]["prune"] else "ft-base"
    frm = replace(rm, model=model, name=f"{rm.name}+{tag}-{digest}")
    hist = {k: np.asarray(res[k]) for k in ("loss", "keep", "threshold_trace", "init")}
    return FinetunedModel(frm, np.asarray(res["head_w"]), np.asarray(res["head_b"]),
                          np.asarray(res["thresholds"], dtype=np.float64), hist, float(res["seconds"]), key)


# ----------------------------------------------------------------------------- inference
def classify(ft: FinetunedModel, texts, max_length: int, attn_fn=None, batch_size: int = 64) -> np.ndarray:
    """Predicted classes (N,) of ``texts`` by the fine-tuned model and head, with ``attn_fn`` (an AttnFn,
    e.g. a `SprintAttention`) in every layer or the model's own exact attention (None): the head on the
    mean-pooled embeddings of `attnlib.evaluate.embed` (batched by length, not cached there)."""
    from ..evaluate import embed

    X = embed(ft.rm, list(texts), max_length, attn_fn=attn_fn, batch_size=batch_size, progress=False, use_cache=False)
    return (X @ np.asarray(ft.head_w).T + np.asarray(ft.head_b)).argmax(-1)


class _CountingSprint(SprintAttention):
    """`SprintAttention` that keeps only per-layer (kept, allowed) pair counts over real query rows
    (the same counts `RowStats` gives, without its per-row arrays and exact probabilities: cheaper)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts: dict[int, np.ndarray] = {}

    def __call__(self, q, k, v, mask, scale, layer):
        from .algorithm import sprint_attention

        qc, kc, vc = q.detach().float().cpu(), k.detach().float().cpu(), v.detach().float().cpu()
        mc = None if mask is None else mask.detach().cpu()
        keep, allowed = self.keep_mask(qc, kc, mc, scale, layer)
        out = sprint_attention(qc, kc, vc, keep, mc, scale)
        tq, tk = keep.shape[-2:]
        valid = torch.diagonal(allowed, dim1=-2, dim2=-1) if tq == tk else allowed.any(-1)
        c = self.counts.setdefault(layer, np.zeros(2))
        c += [float((keep & valid.unsqueeze(-1)).sum()), float((allowed & valid.unsqueeze(-1)).sum())]
        return out.to(device=q.device, dtype=q.dtype)

    def layer_pruning(self, n_layers: int) -> np.ndarray:
        """Fraction of allowed pairs pruned per layer (L,)."""
        return np.array([1.0 - self.counts[l][0] / max(1.0, self.counts[l][1]) if l in self.counts else 0.0
                         for l in range(n_layers)])

    def pruned(self) -> float:
        tot = sum(self.counts.values()) if self.counts else np.zeros(2)
        return float(1.0 - tot[0] / max(1.0, tot[1]))


def learned_attention(ft: FinetunedModel, calib_texts, max_length: int, cfg: AnalogConfig, margin_z: float = 1.0, *,
                      record: bool = False, record_masks: bool = False) -> SprintAttention:
    """The hard-pruning `SprintAttention` of a fine-tuned model: its learned thresholds, the analog front
    end ``cfg`` and per-layer margins margin_z x the RMS analog error of the fine-tuned model's scores
    on ``calib_texts`` (truncated to ``max_length`` tokens; `Calibrator.error_std`)."""
    from .. import models

    if not calib_texts or isinstance(calib_texts, str):
        raise ValueError("calib_texts must be a non-empty list of strings")
    if margin_z < 0:
        raise ValueError(f"margin_z must be >= 0, got {margin_z}")
    caps = models.capture(ft.rm, models.encode(ft.rm, list(calib_texts), max_length))
    margins = margin_z * Calibrator(caps).error_std(cfg)
    return SprintAttention(ft.thresholds, margins, cfg, record=record, record_masks=record_masks)


def evaluate_finetuned(ft: FinetunedModel, test_texts, test_labels, max_length: int, *, cfg: AnalogConfig | None = None,
                       margin_z: float = 1.0, calib_texts=None, hard: bool = True, use_cache: bool = True) -> dict:
    """Per-item correctness of the fine-tuned model on the test items.

    hard=True (pruning runs): a `SprintAttention` with the learned thresholds, the analog front end
    ``cfg`` and margins margin_z x the RMS analog error of the fine-tuned model on ``calib_texts``
    (training texts; `Calibrator.error_std`), in every layer. hard=False or all thresholds -inf: the
    model's own exact attention. Returns dict(correct bool (N,), pruned float (fraction of allowed
    (query, key) pairs of real queries pruned), pruned_per_layer (L,), margins (L,)). Cached under
    ``.cache/sprint_ft`` by the run key, the test data, max_length, cfg and margin_z."""
    from .. import models

    labels = np.asarray(test_labels, dtype=np.int64)
    if len(labels) != len(test_texts):
        raise ValueError(f"{len(test_texts)} texts but {len(labels)} labels")
    L = ft.rm.n_layers
    prune = hard and np.isfinite(ft.thresholds).any()
    if prune and cfg is None:
        raise ValueError("a hard prune needs the analog front end cfg (an AnalogConfig)")
    if prune and not calib_texts:
        raise ValueError("a hard prune needs calib_texts to measure the analog error for the margins")
    key = dict(run=ft.key, test=_digest(list(test_texts), labels), max_length=int(max_length),
               cfg=asdict(cfg) if prune else None, margin_z=float(margin_z) if prune else None,
               calib=_digest(list(calib_texts), np.zeros(len(calib_texts))) if prune else None)

    def compute():
        if not prune:
            pred = classify(ft, test_texts, max_length)
            return {"pred": pred, "pruned": 0.0, "pruned_per_layer": np.zeros(L), "margins": np.zeros(L)}
        ref = learned_attention(ft, calib_texts, max_length, cfg, margin_z)
        fn = _CountingSprint(ref.thresholds, ref.margins, cfg)
        pred = classify(ft, test_texts, max_length, attn_fn=fn)
        return {"pred": pred, "pruned": fn.pruned(), "pruned_per_layer": fn.layer_pruning(L), "margins": ref.margins}

    if use_cache:
        from ..cache import cached

        res = cached("sprint_ft", "eval", key, compute)
    else:
        res = compute()
    return {"correct": np.asarray(res["pred"]) == labels, "pruned": float(res["pruned"]),
            "pruned_per_layer": np.asarray(res["pruned_per_layer"], dtype=np.float64),
            "margins": np.asarray(res["margins"], dtype=np.float64)}
