"""What every objective sees and returns, and the registry that names them.

An objective is a small frozen dataclass, registered by name, that turns per-split model
outputs into a `Loss`. It never runs the model: the engine runs one forward per split the
objective lists in `splits` (and one reference-model forward per split when `needs_ref`).

Conventions (used by every method file):
    logprobs[b, t] = log p_theta(y_t | x, y_<t) for label token t of row b, 0 where not masked.
    mask[b, t]     = True on answer (label) tokens; prompt and padding are False.
    NLL of a row   = mean over its answer tokens of -logprobs (the "mean token NLL", ell).
    seq-logp       = sum over answer tokens of logprobs.
Losses are minimised. Gradient ascent on the forget set is *minimising* -NLL(forget).

Loss reduction (`SplitOutputs.reduction`, the run config's `loss_reduction`), for every
token-level term (NLL, WGA/TNPO's weighted log-likelihood, KL, RMU's activation MSE):
    token     sum over the batch's answer tokens / their number: HF's `outputs.loss`, as
              TOFU (`dataloader.py`, `outputs.loss`), open-unlearning (`compute_batch_nll` /
              `model(**inputs).loss`) and the G-effect authors train (default);
    sequence  each row's mean over its answer tokens, then the mean over rows.
Sequence-level losses (NPO, SimNPO, IdkDPO) average over rows in both, as their papers and
reference code do. `Loss.weights` gives, per split, each row's weight w_b in the batch loss
relative to the row's own term (1/B, or n_b / N under `token`): L = sum_b w_b L(row b).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

SPLITS = ("forget", "retain", "normal", "idk")
REDUCTIONS = ("token", "sequence")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


@dataclass
class SplitOutputs:
    """Model outputs on one split's batch, aligned with the label tokens.

    Attributes:
        logits: (B, T, V) next-token logits, shifted so logits[:, t] predicts token t's label.
        labels: (B, T) label ids, -100 where masked.
        ref_logits: (B, T, V) the reference model's logits, or None.
        hidden: hidden states by layer index (embeddings are 0), each (B, S, d); only filled
            for objectives that ask for them (`hidden_layers`).
        ref_hidden: the reference model's hidden states, same keys.
        group: (B,) index of the forget row each row belongs to (SGA's normal rows), or None.
        reduction: "token" (pool the batch's answer tokens) or "sequence" (mean of row means).

    `logprobs` and `ref_logprobs` are computed once per split (one fused cross-entropy each)
    and cached, so an objective and the engine's monitoring may read them as often as they
    like; the fields are not meant to be replaced after construction.
    """

    logits: Tensor
    labels: Tensor
    ref_logits: Tensor | None = None
    hidden: dict[int, Tensor] = field(default_factory=dict)
    ref_hidden: dict[int, Tensor] = field(default_factory=dict)
    group: Tensor | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _full: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def shifted(cls, logits: Tensor, labels: Tensor, ref_logits: Tensor | None = None,
                **kw) -> SplitOutputs:
        """From a causal LM's full-length outputs, where logits[:, t] predicts labels[:, t + 1].

        Fields hold logits[:, :-1] and labels[:, 1:] as usual; the label log-probs are computed
        on the full, contiguous logits with the labels shifted instead (as HF's loss does), so
        no B x T x V copy of the sliced logits is made.
        """
        out = cls(logits=logits[:, :-1], labels=labels[:, 1:],                 # (B, T, V), (B, T)
                  ref_logits=None if ref_logits is None else ref_logits[:, :-1], **kw)
        out._full.update(logprobs=logits, ref_logprobs=ref_logits)            # each (B, T+1, V)
        return out
    reduction: str = "token"

    def __post_init__(self):
        check_reduction(self.reduction)

    @property
    def mask(self) -> Tensor:
        return self.labels != -100                                  # (B, T)

    def _cached_logprobs(self, key: str, logits: Tensor) -> Tensor:
        """token_logprobs(logits, labels), computed once; a value made without a graph is
        not reused where a graph is wanted (a no-grad read before the objective)."""
        hit = self._cache.get(key)
        if hit is not None and (hit.requires_grad or not (torch.is_grad_enabled() and logits.requires_grad)):
            return hit
        full = self._full.get(key)
        if full is not None:
            padded = F.pad(self.labels, (0, 1), value=-100)         # (B, T+1)
            value = token_logprobs(full, padded)[:, :-1]            # (B, T)
        else:
            value = token_logprobs(logits, self.labels)             # (B, T)
        self._cache[key] = value
        return value

    @property
    def logprobs(self) -> Tensor:
        return self._cached_logprobs("logprobs", self.logits)      # (B, T)

    @property
    def ref_logprobs(self) -> Tensor:
        if self.ref_logits is None:
            raise ValueError("ref_logprobs asked for, but this split has no reference outputs "
                             "(the objective must declare needs_ref = True)")
        return self._cached_logprobs("ref_logprobs", self.ref_logits)  # (B, T)

    @property
    def nll(self) -> Tensor:
        """(B,) mean token NLL of each row."""
        return mean_token_nll(self.logprobs, self.mask)

    @property
    def batch_nll(self) -> Tensor:
        """Scalar NLL of the batch under `reduction` (token: HF's `outputs.loss`)."""
        return reduce_tokens(-self.logprobs, self.mask, self.reduction)

    @property
    def weights(self) -> Tensor:
        """(B,) detached weight of each row's own mean-token term under `reduction`."""
        return row_weights(self.mask, self.reduction, self.logits.dtype)


Outputs = Mapping[str, SplitOutputs]


@dataclass
class Loss:
    """A scalar to minimise plus its named parts.

    Attributes:
        total: the scalar the engine backpropagates.
        terms: named scalar parts for the training record (detached by the engine).
        parts: differentiable scalars for objectives that own their update (NGDiff), else empty.
        weights: split -> (B,) detached weight w_b of each row's own objective term in `total`
            (so grad total = sum_b w_b grad L(row b)); the point-wise G-effects divide by it.
            A split missing here has no such per-row decomposition.
    """

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    parts: dict[str, Tensor] = field(default_factory=dict)
    weights: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    splits: ClassVar[tuple[str, ...]]
    needs_ref: ClassVar[bool]

    def __call__(self, out: Outputs) -> Loss: ...

# Optional attributes the engine also reads (with getattr defaults):
#   hidden_layers: tuple[int, ...] = ()   hidden states to return (RMU)
#   trainable: str | None = None          regex of parameter names to train; others frozen


@runtime_checkable
class OwnsUpdate(Protocol):
    """An objective whose update direction is not the gradient of one scalar (NGDiff).

    The engine calls `backward(loss, params)` instead of `loss.total.backward()`; it must leave
    the update direction in each parameter's `.grad`. If it also defines
    `learning_rate(step, lr, loss_at)` the engine uses the returned rate for this step, where
    `loss_at(eta)` is the objective's loss after moving the parameters by -eta * grad (the
    parameters are restored afterwards).
    """

    def backward(self, loss: Loss, params: list[torch.nn.Parameter]) -> None: ...


REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make an objective constructible by `build(name, **hparams)`."""

    def wrap(cls: type) -> type:
        if name in REGISTRY:
            raise ValueError(f"objective name {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def build(name: str, **hparams) -> Objective:
    """Instantiate a registered objective, with errors that name what was expected."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    fields = set(getattr(cls, "__dataclass_fields__", {}))
    unknown = set(hparams) - fields
    if unknown:
        raise ValueError(f"method {name!r} takes {sorted(fields)}; got unknown {sorted(unknown)}")
    return cls(**hparams)


# ---- small pure helpers shared by method files -------------------------------------------

def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """(B, T) log-probability of each label token; 0 where labels == -100.

    One fused cross-entropy (as HF's causal-LM loss computes it): the B x T x V
    log-softmax lives only inside that op (saved by autograd for its backward), never as a
    tensor the caller holds. Values and gradients equal log_softmax(logits).gather(labels)
    masked to 0 (tested in float64 against that formula).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"token_logprobs needs logits (B, T, V) and labels (B, T); got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                          reduction="none", ignore_index=-100)      # (B*T,)  0 where ignored
    return -nll.view(labels.shape)                                  # (B, T)


def mean_token_nll(logprobs: Tensor, mask: Tensor) -> Tensor:
    """(B,) mean over answer tokens of -log p; rows without answer tokens raise."""
    n = mask.sum(-1)                                                # (B,)
    if bool((n == 0).any()):
        raise ValueError("a row has no answer tokens (all labels masked): the prompt filled "
                         "max_length; raise max_length or shorten the prompt")
    return -(logprobs * mask).sum(-1) / n                           # (B,)


def seq_logprob(logprobs: Tensor, mask: Tensor) -> Tensor:
    """(B,) summed log-probability of the answer tokens."""
    return (logprobs * mask).sum(-1)                                # (B,)


def reduce_tokens(values: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """Scalar average of per-token `values` (B, T) over the answer tokens.

    token: sum over all answer tokens / their number (HF `outputs.loss` for values = NLL);
    sequence: mean over rows of each row's mean over its answer tokens.
    """
    n = mask.sum(-1)                                                # (B,)
    if bool((n == 0).any()):
        raise ValueError("a row has no answer tokens (all labels masked): the prompt filled "
                         "max_length; raise max_length or shorten the prompt")
    if check_reduction(reduction) == "token":
        return (values * mask).sum() / n.sum()
    return ((values * mask).sum(-1) / n).mean()


def row_weights(mask: Tensor, reduction: str, dtype=torch.float64) -> Tensor:
    """(B,) weight of each row's mean-token term in `reduce_tokens`: n_b / N or 1 / B."""
    n = mask.sum(-1).to(dtype)                                      # (B,)
    if check_reduction(reduction) == "token":
        return n / n.sum()
    return torch.full_like(n, 1.0 / n.shape[0])


def token_weighted_ascent(weight: Tensor, logprobs: Tensor, mask: Tensor,
                          reduction: str = "token") -> Tensor:
    """Scalar: the weighted log-likelihood averaged over answer tokens (ascent on NLL).

    Minimising it raises the weighted NLL. `weight` is (B, T) and must already be detached.
    """
    return reduce_tokens(weight * logprobs, mask, reduction)


def answer_kl(logits: Tensor, ref_logits: Tensor, mask: Tensor) -> Tensor:
    """(B,) KL(p_ref || p_theta) summed over the vocabulary, averaged over answer tokens.

    The open-unlearning reference code averages over every position, padding and prompt
    included; that mixes in tokens nobody asked to preserve, so we average over answer tokens.

    log p is formed as z - logsumexp(z) (z the logits), a temporary that autograd does not
    keep: the backward needs only q = p_ref (no gradient) and z, so no B x T x V log-softmax
    of the policy stays alive until the backward. log q is formed the same way, so equal
    logits give exactly 0. Value and gradient equal the log_softmax form (tested in float64).
    """
    if ref_logits is None:
        raise ValueError("answer_kl needs reference logits, but this split has none "
                         "(the objective must declare needs_ref = True)")
    kl = token_kl(logits, ref_logits)                               # (B, T)
    return (kl * mask).sum(-1) / mask.sum(-1).clamp_min(1)          # (B,)


def token_kl(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """(B, T) KL(p_ref || p_theta) over the vocabulary at every position; the reference's
    log-softmax is formed without a graph, so no B x T x V tensor outlives the backward but
    the policy's own."""
    with torch.no_grad():
        logq = ref_logits - torch.logsumexp(ref_logits, -1, keepdim=True)   # (B, T, V)
        q = logq.exp()                                                  # (B, T, V)
    logp = logits - torch.logsumexp(logits, -1, keepdim=True)           # (B, T, V)
    return (q * (logq - logp)).sum(-1)                                  # (B, T)
