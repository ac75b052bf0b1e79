"""Fake, schema-valid records with plausible numbers, so analysis tests need no model.

The numbers are internally consistent: `geffect` is the mean (risk_reduction="mean") over a
probe's instances of `geffect_instance`, `geffect_pointwise` sums over `sample` to `geffect`,
the Gram matrices are positive semi-definite and `r_star` follows from them in closed form.
Unlearning-like trends: forget G-effects are negative and grow in size over steps, deep
layers carry more of it (Wang et al. 2025, Fig. 2), retain G-effects are smaller and mixed.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .divergence import r_star, sga_coefficients
from .schema import GRAM_SPLITS, band_of, make_attrs, validate


def fake_groups(n_layers: int = 4) -> dict[str, np.ndarray]:
    """Coordinates of the `group` dim of a small untied Llama-style model."""
    d, ff, vocab = 64, 128, 259
    rows = [("model.embed_tokens", -1, "embed", vocab * d)]
    for i in range(n_layers):
        rows += [(f"model.layers.{i}.input_layernorm", i, "norm", d),
                 (f"model.layers.{i}.self_attn", i, "attn", 4 * d * d),
                 (f"model.layers.{i}.post_attention_layernorm", i, "norm", d),
                 (f"model.layers.{i}.mlp", i, "mlp", 3 * d * ff)]
    rows += [("model.norm", -1, "norm", d), ("lm_head", -1, "lm_head", vocab * d)]
    return {"group": np.array([r[0] for r in rows], dtype=object),
            "layer": np.array([r[1] for r in rows], dtype=np.int64),
            "component": np.array([r[2] for r in rows], dtype=object),
            "n_params": np.array([r[3] for r in rows], dtype=np.int64),
            "band": np.array([band_of(r[1], n_layers, r[2]) for r in rows], dtype=object),
            "measured_by": np.array(["kernel"] * len(rows), dtype=object)}


def _coords(groups, n_steps, n_instances, n_samples, rng):
    n_f = (n_instances + 1) // 2
    split = np.array(["forget"] * n_f + ["retain"] * (n_instances - n_f), dtype=object)
    ids = np.array([f"{s}-{i}" for i, s in enumerate(split)], dtype=object)
    coords = {"step": np.arange(n_steps, dtype=np.int64), "probe": np.array(["forget", "retain"],
              dtype=object), "instance": np.arange(n_instances, dtype=np.int64),
              "instance_id": ("instance", ids), "split": ("instance", split),
              "n_tokens": ("instance", rng.integers(5, 40, n_instances).astype(np.int64)),
              "sample": np.arange(n_samples, dtype=np.int64)}
    coords.update({k: ("group", v) for k, v in groups.items() if k != "group"})
    coords["group"] = groups["group"]
    return coords


def fake_record(seed: int = 0, n_steps: int = 5, n_layers: int = 4, n_instances: int = 6,
                n_samples: int = 4, kind: str = "geffect", with_divergence: bool = True,
                method: str = "sga") -> xr.Dataset:
    """A schema-valid record (kind "geffect", or "train" for `fake_train_record`)."""
    if kind == "train":
        return fake_train_record(seed=seed, n_steps=n_steps, method=method)
    if kind != "geffect":
        raise ValueError(f"kind must be 'geffect' or 'train', got {kind!r}")
    rng = np.random.default_rng(seed)
    groups = fake_groups(n_layers)
    coords = _coords(groups, n_steps, n_instances, n_samples, rng)
    n_g = len(groups["group"])
    depth = np.where(groups["layer"] >= 0, (groups["layer"] + 1) / n_layers, 0.5)  # (G,)
    growth = 1.0 + np.arange(n_steps)[:, None, None]                              # (S, 1, 1)
    is_forget = coords["split"][1] == "forget"                                    # (I,)
    base = np.where(is_forget[:, None], -depth[None, :], 0.2 * depth[None, :])    # (I, G)
    inst = growth * (base + 0.3 * rng.standard_normal((n_steps, n_instances, n_g)))  # (S, I, G)
    ge = np.stack([inst[:, is_forget].mean(1), inst[:, ~is_forget].mean(1)], 1)   # (S, 2, G)
    share = rng.dirichlet(np.ones(n_samples), size=(n_steps, 2, n_g))             # (S, 2, G, N)
    noise = rng.standard_normal(share.shape) * 0.1                                # (S, 2, G, N)
    noise -= noise.mean(-1, keepdims=True)
    pw = (ge[..., None] * share + noise).transpose(0, 3, 1, 2)                    # (S, N, 2, G)
    gsq = rng.gamma(2.0, 1.0, (n_steps, n_g)) * growth[:, :, 0]                   # (S, G)
    rsq = rng.gamma(2.0, 1.0, (n_steps, 2, n_g))                                  # (S, 2, G)
    risk = 2.0 + np.where(is_forget, 0.5, 0.0) * np.arange(n_steps)[:, None] \
        + 0.2 * rng.random((n_steps, n_instances))                                # (S, I)
    sample_id = np.array([[f"forget-{(t * n_samples + s) % 97}" for s in range(n_samples)]
                          for t in range(n_steps)], dtype=object)                 # (S, N)
    ds = xr.Dataset(
        {"geffect": (("step", "probe", "group"), ge),
         "geffect_instance": (("step", "instance", "group"), inst),
         "geffect_pointwise": (("step", "sample", "probe", "group"), pw),
         "sample_id": (("step", "sample"), sample_id),
         "sample_weight": (("step", "sample"), np.ones((n_steps, n_samples))),  # contributions
         "risk": (("step", "instance"), risk),
         "objective_loss": (("step",), -risk[:, is_forget].mean(1)),
         "grad_sq_norm": (("step", "group"), gsq),
         "risk_grad_sq_norm": (("step", "probe", "group"), rsq)},
        coords=coords,
        attrs=make_attrs(config={"method": method, "seed": seed, "fake": True},
                         model="fake-llama", method=method, risk_reduction="mean",
                         pointwise="contribution"))
    if with_divergence:
        ds = ds.merge(_fake_divergence(rng, n_steps, n_g), combine_attrs="override")
        ds.attrs.update(sga_k=4, sga_r=0.5, r_star_convention="gls")
    return validate(ds)


def _fake_divergence(rng, n_steps: int, n_g: int, k: int = 4, r: float = 0.5) -> xr.Dataset:
    v = rng.standard_normal((n_steps, n_g, 2, 3))                                 # (S, G, 2, 3)
    v[:, :, 1] = 0.8 * v[:, :, 0] + 0.6 * v[:, :, 1]                              # correlated
    gram = np.einsum("sgac,sgbc->sgab", v, v)                                     # (S, G, 2, 2)
    gff, gfn, gnn = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]             # (S, G)
    a, b = sga_coefficients(r, k, "gls")
    sga_sq = a * a * gff + 2 * a * b * gfn + b * b * gnn                          # (S, G)
    cos = -(a * gff + b * gfn) / np.sqrt(gff * sga_sq)                            # (S, G)
    tot = gram.sum(1)                                                             # (S, 2, 2)
    return xr.Dataset(
        {"gram": (("step", "group", "split_a", "split_b"), gram),
         "cosine_ga_sga": (("step", "group"), cos),
         "norm_ratio_ga_sga": (("step", "group"), np.sqrt(sga_sq / gff)),
         "r_star": (("step",), r_star(tot[:, 0, 0], tot[:, 0, 1], tot[:, 1, 1], k)),
         "r_star_group": (("step", "group"), r_star(gff, gfn, gnn, k))},
        coords={"split_a": np.array(GRAM_SPLITS, dtype=object),
                "split_b": np.array(GRAM_SPLITS, dtype=object)})


def fake_train_record(seed: int = 0, n_steps: int = 5, method: str = "sga",
                      terms: tuple[str, ...] = ("forget_nll", "normal_nll"),
                      eval_metrics: tuple[str, ...] = ("forget_quality",)) -> xr.Dataset:
    """A schema-valid training record (kind="train")."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    nll_f = 2.0 + 0.4 * t + 0.1 * rng.random(n_steps)                            # (S,)
    ds = xr.Dataset(
        {"loss": ("step", -nll_f),
         "loss_term": (("step", "term"), np.stack([nll_f] + [2.0 + 0.1 * rng.random(n_steps)
                                                             for _ in terms[1:]], 1)),
         "grad_norm": ("step", rng.gamma(2.0, 1.0, n_steps)),
         "lr": ("step", np.full(n_steps, 1e-5)),
         "nll_forget": ("step", nll_f),
         "nll_retain": ("step", 1.5 + 0.05 * t + 0.05 * rng.random(n_steps))},
        coords={"step": t.astype(np.int64), "term": np.array(terms, dtype=object)},
        attrs=make_attrs(config={"method": method, "seed": seed, "fake": True},
                         model="fake-llama", method=method, kind="train"))
    for m in eval_metrics:
        ds[f"eval_{m}"] = ("step", rng.random(n_steps))
    return validate(ds, kind="train")
