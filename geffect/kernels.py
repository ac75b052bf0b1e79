"""Per-instance inner-product kernels on (activations, backprops), one per module type.

For a module called on a batch of N rows, with input activations a and the gradient b of the
loss with respect to its output, the gradient of a parameter splits by row:
grad = sum_n grad_n. Given a fixed matrix G of the parameter's shape, each kernel returns
<G, grad_n> for every row n WITHOUT forming grad_n (the per-example trick of Goodfellow 2015
and Opacus' `grad_sample/linear.py`, here contracted with G at once):

    Linear  W (out, in):   <G, grad_n W> = sum_t b_nt^T G a_nt    ("nto,oi,nti->n")
    Conv1D  W (in, out):   <G, grad_n W> = sum_t a_nt^T G b_nt    (GPT-2, transposed Linear)
    bias    (out,):        <G, grad_n b> = sum_t b_nt . G
    Embedding (V, d):      <G, grad_n E> = sum_t G[x_nt] . b_nt   (padding_idx rows get none)
    scaled (y = s E[x]):   <G, grad_n E> = s sum_t G[x_nt] . b_nt (Gemma)
    norm weight (d,):      <G, grad_n w> = sum_t (b_nt * xhat_nt) . G   (y = w * xhat + bias)

G carries a leading "direction" dim D (several fixed matrices at once, e.g. the forget and
retain risk gradients), so each kernel returns (N, D). A tied LM head is a Linear whose weight
is the embedding matrix: each call's contribution goes to the group of that use.

A kernel is registered for the `forward` it was derived for (`register`); `kind_of` applies it
only to modules whose class forward is that function, so a subclass that overrides `forward`
is measured by the torch.func fallback instead (exact or loud).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .capture import Live


@dataclass(frozen=True)
class Kernel:
    """A kernel and the `forward` it was derived for (Opacus' `register_grad_sampler` idea).

    Attributes:
        kind: "linear", "conv1d", "embedding", "scaled_embedding" or "norm".
        key: (`__module__`, `__qualname__`) of that forward.
        forward: the function itself when registered by object (then `is` is also checked).
        ok: further conditions on the module (its own parameter names, its options).
    """

    kind: str
    key: tuple[str, str]
    forward: Callable | None
    ok: Callable[[nn.Module, set], bool]


REGISTRY: dict[tuple[str, str], Kernel] = {}


def _affine(module: nn.Module, own: set) -> bool:
    return own <= {"weight", "bias"} and getattr(module, "weight", None) is not None


def _plain_embedding(module: nn.Module, own: set) -> bool:
    return own == {"weight"} and module.max_norm is None and not module.scale_grad_by_freq \
        and not module.sparse


def _scaled_embedding(module: nn.Module, own: set) -> bool:
    return _plain_embedding(module, own) and torch.is_tensor(getattr(module, "embed_scale", None))


_OK = {"linear": _affine, "conv1d": _affine, "norm": _affine, "embedding": _plain_embedding,
       "scaled_embedding": _scaled_embedding}


def register(forward: Callable | str, kind: str) -> Kernel:
    """Register `kind` for modules whose `type(module).forward` is `forward`.

    Args:
        forward: the function (e.g. `nn.Linear.forward`), or "module:Qualname.forward" for a
            class that need not be imported (matched by the function's module and qualname).
        kind: one of the kernels above; the caller vouches that the forward has that form
            (a norm: y = weight * xhat(x) (+ bias), xhat independent of the parameters).
    """
    if kind not in _OK:
        raise ValueError(f"kernel kind must be one of {sorted(_OK)}, got {kind!r}")
    if isinstance(forward, str):
        mod, _, qual = forward.partition(":")
        k = Kernel(kind, (mod, qual), None, _OK[kind])
    else:
        k = Kernel(kind, (forward.__module__, forward.__qualname__), forward, _OK[kind])
    REGISTRY[k.key] = k
    return k


register(nn.Linear.forward, "linear")
register(nn.Embedding.forward, "embedding")
register(nn.LayerNorm.forward, "norm")
if hasattr(nn, "RMSNorm"):
    register(nn.RMSNorm.forward, "norm")
register("transformers.pytorch_utils:Conv1D.forward", "conv1d")
_HF = "transformers.models.{0}.modeling_{0}:{1}.forward"
# y = weight * normalize(x): each forward read (transformers 5.x); Gemma's (1 + w) is not.
for _m, _c in (("llama", "LlamaRMSNorm"), ("mistral", "MistralRMSNorm"),
               ("mixtral", "MixtralRMSNorm"), ("qwen2", "Qwen2RMSNorm"),
               ("qwen2_moe", "Qwen2MoeRMSNorm"), ("qwen3", "Qwen3RMSNorm"),
               ("qwen3_moe", "Qwen3MoeRMSNorm"), ("smollm3", "SmolLM3RMSNorm"),
               ("olmo2", "Olmo2RMSNorm"), ("phi3", "Phi3RMSNorm"), ("t5", "T5LayerNorm")):
    register(_HF.format(_m, _c), "norm")
# y = E[x] * embed_scale (Gemma 1-3): the embedding kernel times the scale.
for _m, _c in (("gemma", "GemmaTextScaledWordEmbedding"),
               ("gemma2", "Gemma2TextScaledWordEmbedding"),
               ("gemma3", "Gemma3TextScaledWordEmbedding")):
    register(_HF.format(_m, _c), "scaled_embedding")


def kind_of(module: nn.Module) -> str | None:
    """Kernel name for a module that owns parameters directly, or None (torch.func fallback).

    A kernel applies only when the module's class `forward` is the registered one: a subclass
    that overrides `forward` (Gemma's scaled embedding, OPT's positional embedding, a wrapper
    that patches `forward` on the instance) falls back unless its own forward is registered.
    """
    if "forward" in vars(module):                                   # patched on the instance
        return None
    f = type(module).forward
    k = REGISTRY.get((getattr(f, "__module__", ""), getattr(f, "__qualname__", "")))
    if k is None or (k.forward is not None and k.forward is not f):
        return None
    own = {n for n, _ in module.named_parameters(recurse=False)}
    return k.kind if k.ok(module, own) else None


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1, x.shape[-1])                   # (N, T, d)


def compact(b: Tensor) -> tuple[Tensor, Live]:
    """The tokens of a backprop b (N, *, out) that are not all zero: (M, out) and where they
    came from. Padding, and at the LM head prompt tokens, have b = 0 exactly, so dropping
    them changes no sum; it saves their memory when b is stored and their share of the
    contraction's matmul."""
    b = _flat(b)                                                    # (N, T, out)
    n, t = b.shape[:2]
    idx = (b != 0).any(-1).reshape(-1).nonzero().squeeze(1)         # (M,)
    return b.reshape(n * t, -1)[idx], Live(idx, n, t)


def linear_rows(a: Tensor, b: Tensor, g: Tensor, live: Live | None = None) -> Tensor:
    """(N, D) sum_t b_nt^T G_d a_nt for a (N, *, in), b (N, *, out), g (D, out, in).

    With `live`, b is already compacted to (M, out) by `compact`."""
    if live is None:
        b, live = compact(b)                                        # (M, out)
    a = _flat(a).reshape(live.n * live.t, -1)[live.idx]             # (M, in)
    d_, out, inp = g.shape
    cols = []
    for d in range(d_):                                             # no (out, D*in) copy
        if inp <= out:                                              # smaller intermediate
            cols.append(((b @ g[d]) * a).sum(-1))                   # (M,)
        else:
            cols.append(((a @ g[d].T) * b).sum(-1))                 # (M,)
    per_token = torch.stack(cols, 1)                                # (M, D)
    return per_token.new_zeros(live.n, d_).index_add_(0, live.rows, per_token)  # (N, D)


def bias_rows(b: Tensor, g: Tensor, live: Live | None = None) -> Tensor:
    """(N, D) sum_t b_nt . g_d for b (N, *, out) (or compacted (M, out) with `live`), g (D, out)."""
    if live is None:
        return _flat(b).sum(1) @ g.T                                # (N, D)
    per_token = b @ g.T                                             # (M, D)
    return per_token.new_zeros(live.n, g.shape[0]).index_add_(0, live.rows, per_token)


def embedding_rows(ids: Tensor, b: Tensor, g: Tensor, padding_idx: int | None) -> Tensor:
    """(N, D) sum_t G_d[x_nt] . b_nt; rows looked up at padding_idx get no gradient."""
    ids = ids.reshape(ids.shape[0], -1)                             # (N, T)
    b = _flat(b)                                                    # (N, T, d)
    if padding_idx is not None:
        b = b * (ids != padding_idx).unsqueeze(-1)                  # (N, T, d)
    out = [(g[d][ids] * b).sum((1, 2)) for d in range(g.shape[0])]  # D x (N,)
    return torch.stack(out, 1)                                      # (N, D)


def norm_xhat(module: nn.Module, x: Tensor) -> Tensor:
    """The normalised input xhat with y = weight * xhat (+ bias), by re-running the module
    with unit weight and zero bias (the same code path, so the same rounding)."""
    params = {n: (torch.ones_like(p) if n == "weight" else torch.zeros_like(p))
              for n, p in module.named_parameters(recurse=False)}
    with torch.no_grad():
        return torch.func.functional_call(module, params, (x,))     # (N, *, d)


def norm_per_row(module: nn.Module, x: Tensor, b: Tensor) -> dict[str, Tensor]:
    """Per-row gradients of a norm's weight and bias, each (N, d): tiny, so formed directly."""
    out = {}
    own = dict(module.named_parameters(recurse=False))
    if "weight" in own:
        xhat = norm_xhat(module, x)                                 # (N, *, d)
        out["weight"] = _flat(b * xhat).sum(1)                      # (N, d)
    if "bias" in own:
        out["bias"] = _flat(b).sum(1)                               # (N, d)
    return out


def dense_rows(per_row: Tensor, g: Tensor) -> Tensor:
    """(N, D) <G_d, grad_n> from formed per-row gradients (N, *shape) and g (D, *shape)."""
    return per_row.reshape(per_row.shape[0], -1) @ g.reshape(g.shape[0], -1).T  # (N, D)


def rows_inner(kind: str, module: nn.Module, a: Tensor, b: Tensor,
               g: dict[str, Tensor], live: Live | None = None) -> dict[str, Tensor]:
    """<G, grad_n> per row for each of the module's own parameters present in `g`.

    Args:
        kind: from `kind_of` ("linear", "conv1d", "embedding"; norms use `norm_per_row`).
        module: the module.
        a: its input activations (token ids for an Embedding).
        b: gradient of the loss with respect to its output.
        g: parameter name ("weight"/"bias") -> (D, *param.shape) fixed matrices.
        live: set when b was stored compacted (`compact`; linear and conv1d only).

    Returns:
        parameter name -> (N, D).
    """
    out = {}
    if "weight" in g:
        w = g["weight"]
        if kind == "linear":
            out["weight"] = linear_rows(a, b, w, live)
        elif kind == "conv1d":
            out["weight"] = linear_rows(a, b, w.transpose(1, 2), live)
        elif kind == "embedding":
            out["weight"] = embedding_rows(a, b, w, module.padding_idx)
        elif kind == "scaled_embedding":
            scale = module.embed_scale.to(module.weight.dtype)
            out["weight"] = embedding_rows(a, b, w, module.padding_idx) * scale
        else:
            raise ValueError(f"no factored kernel for kind {kind!r}; expected linear, conv1d "
                             f"or embedding")
    if "bias" in g:
        out["bias"] = bias_rows(b, g["bias"], live)
    return out
