"""`geffect` command line: unlearn, finetune, eval, sweep, figures.

Every run flag maps to one field of `RunConfig` and takes its help from the field's doc;
method hyperparameters get one flag per field of the registered objectives (`--beta`,
`--alpha`, `--r` a.k.a. `--smoothing-rate`, ...), documented per method below
(`geffect unlearn --method sga --help` shows only SGA's). Expected failures print one line,
`geffect: error: ...`, and exit with status 1; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .config import RunConfig, field_docs
from .objectives import REGISTRY

TYPES = {"float": float, "int": int, "str": str, "bool": lambda s: s.lower() in ("1", "true", "yes"),
         "float | None": float, "int | None": int, "str | None": str}
ALIASES = {"r": ["--smoothing-rate"]}
# What each hyperparameter means, per method where the papers use a symbol differently.
HPARAM_DOCS = {
    "r": "smoothing rate: forget weight 1 - r + r/K, each normal sample's weight r/K",
    "k": "group size K: one forget sample plus K-1 normal samples (see --normal-strategy)",
    "convention": "sign convention: gls (normal samples ascended too, r <= 1) or split "
                  "(normal samples descended, 0 <= r <= 1)",
    "retain": "retain regulariser R: none, nll (retain NLL) or kl (KL(p_ref || p_theta))",
    "alpha": "weight of the retain regulariser R",
    "lam": "weight of the retain regulariser R",
    "beta": "inverse temperature of the preference (log-sigmoid) loss",
    "gamma": "reward margin, applied as sigma(beta * (ell - gamma / beta))",
    "phi": "GeN re-estimates the learning rate every phi steps",
    "lr_min": "lower bound of the GeN learning rate",
    "lr_max": "upper bound of the GeN learning rate",
    "adaptive": "use GeN's learning rate (false: the run's --lr)",
    "smooth": "GeN's smoothing of the rate: eta <- smooth * eta + (1 - smooth) * fitted eta",
    "max_change": "GeN's bound on one update: the fitted rate is clipped to [eta / m, eta * m]",
    "forget_weight": "weight of the forget (SimNPO preference) term",
    "c": "norm of the control vector c*u the forget activations are steered to",
    "layer": "steered decoder block, 0-based (default: round(depth * blocks))",
    "depth": "steered block as a fraction of the model's blocks (WMDP: 7/32)",
    "trainable_regex": "regex of the parameters trained (default: MLP down-projections of "
                       "blocks layer-2..layer)",
    "vector_seed": "seed of the random unit vector u",
    ("wga", "beta"): "exponent of the token weight p^beta (0: GA)",
    ("wtnpo", "alpha"): "extra exponent on p in the token weight (0: TNPO)",
    ("rmu", "alpha"): "weight of the retain activation MSE",
}


def hparam_doc(method: str, name: str) -> str:
    return HPARAM_DOCS.get((method, name)) or HPARAM_DOCS.get(name, "")


def _methods() -> list[str]:
    return sorted(m for m in REGISTRY if not m.startswith("_") and m not in ("retain_kl", "retain_nll"))


def _hparam_fields() -> dict[str, tuple[type, dict[str, object]]]:
    """Every hyperparameter of every registered objective -> (type, {method: default})."""
    seen: dict[str, tuple[type, dict[str, object]]] = {}
    for name, cls in sorted(REGISTRY.items()):
        if name.startswith("_"):                         # test-only objectives
            continue
        for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else []:
            typ = TYPES.get(str(f.type), str)
            seen.setdefault(f.name, (typ, {}))[1][name] = f.default
    return seen


def _peek_method(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--method="):
            return a.split("=", 1)[1]
    return None


def add_run_flags(p: argparse.ArgumentParser, skip=(), skip_hparams=(), method: str | None = None) -> None:
    docs = field_docs()
    for f in dataclasses.fields(RunConfig):
        if f.name == "hparams" or f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        typ = TYPES.get(str(f.type), str)
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=typ, default=default,
                       help=f"{docs.get(f.name, '')} (default: {default})")
    fields = _hparam_fields()
    if method in REGISTRY:
        title, shown = f"{method} hyperparameters", {n for n, (_, m) in fields.items() if method in m}
    else:
        title, shown = "method hyperparameters (each method's meaning and default: below)", set(fields)
    hp = p.add_argument_group(title)
    for name, (typ, by_method) in fields.items():
        if name in skip_hparams:
            continue
        if name not in shown:
            text = argparse.SUPPRESS
        elif method in REGISTRY:
            text = f"{hparam_doc(method, name)} (default: {by_method[method]})"
        else:
            text = "used by " + ", ".join(by_method)
        hp.add_argument(f"--{name.replace('_', '-')}", *ALIASES.get(name, []), dest=f"hp_{name}",
                        type=typ, default=None, help=text)
    if method not in REGISTRY:
        for m in _methods():
            rows = [f"  --{n.replace('_', '-'):16s} {hparam_doc(m, n)} (default: {d[m]})"
                    for n, (_, d) in fields.items() if m in d and n not in skip_hparams]
            p.add_argument_group(f"{m} hyperparameters", "\n".join(rows) or "  (none)")


def config_from_args(args: argparse.Namespace, **override) -> RunConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
              if hasattr(args, f.name)}
    values.update(override)
    method = values.get("method", "ga")
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; expected one of {_methods()}")
    fields = {f.name for f in dataclasses.fields(REGISTRY[method])}
    given = {k[3:]: v for k, v in vars(args).items() if k.startswith("hp_") and v is not None}
    foreign = sorted(set(given) - fields)
    if foreign:
        raise ValueError(f"method {method!r} takes {sorted(fields)}; got {foreign}")
    values["hparams"] = {**given, **override.get("hparams", {})}
    return RunConfig(**values)


def cmd_unlearn(args) -> None:
    from .engine import run

    cfg = config_from_args(args)
    out = run(cfg)
    print(f"run written to {out}")


def cmd_finetune(args) -> None:
    from .finetune import finetune

    finetune(args.model, args.out, forget_split=args.forget_split, n_retain=args.n_retain,
             epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_length=args.max_length,
             data_dir=args.data_dir, which=args.which)


def cmd_eval(args) -> None:
    from .evaluation import run_eval

    for k, v in run_eval(args.model, args.benchmark.split(","), Path(args.out), forget_split=args.forget_split,
                         data_dir=args.data_dir, max_instances=args.max_instances,
                         retain_truth_ratios=args.retain_truth_ratios).items():
        print(f"{k:32s} {v:.4f}" if isinstance(v, float) else f"{k:32s} {v}")


def cmd_sweep(args) -> None:
    from .sweep import parse_list, sweep

    base = config_from_args(args)
    rates = parse_list(args.smoothing_rates, float, "--smoothing-rates")
    sweep(base, rates, parse_list(args.conventions, str, "--conventions"), Path(args.out))


def cmd_figures(args) -> None:
    from analysis.figures import write_figures

    for path in write_figures([Path(p) for p in args.run_dirs], Path(args.out)):
        print(path)


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    method = _peek_method(argv or [])
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="geffect", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
    u = sub.add_parser("unlearn", parents=[debug], help="run one unlearning job (resumable)", formatter_class=fmt,
                       description="Run one unlearning job; rerun the same command to resume.")
    add_run_flags(u, method=method)
    u.set_defaults(func=cmd_unlearn)

    s = sub.add_parser("sweep", parents=[debug], help="grid over SGA smoothing rates and conventions (resumable)",
                       formatter_class=fmt)
    add_run_flags(s, skip_hparams=("r", "convention"), method="sga")
    s.add_argument("--smoothing-rates", default="-1,-0.5,0,0.25,0.5,0.8",
                   help="comma-separated SGA smoothing rates r (gls: r <= 1; split: 0 <= r <= 1)")
    s.add_argument("--conventions", "--convention", default="gls",
                   help="comma-separated SGA sign conventions: gls, split")
    s.set_defaults(func=cmd_sweep, method="sga")

    f = sub.add_parser("finetune", parents=[debug], help="train TOFU target and retain models on a subset")
    f.add_argument("--model", default="smollm2-135m", help="model to fine-tune (a name as for unlearn)")
    f.add_argument("--out", default=".cache/finetuned", help="directory of the fine-tuned models")
    f.add_argument("--forget-split", default="forget01", help="TOFU forget split the target learns")
    f.add_argument("--n-retain", type=int, default=40, help="retain records the models also learn")
    f.add_argument("--epochs", type=int, default=3, help="passes over the training data")
    f.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    f.add_argument("--batch-size", type=int, default=8, help="rows per step")
    f.add_argument("--max-length", type=int, default=256, help="tokens per row")
    f.add_argument("--data-dir", default=None, help="benchmark data root")
    f.add_argument("--which", default="both", choices=["both", "target", "retain"],
                   help="train the target (forget + retain), the retain model, or both")
    f.set_defaults(func=cmd_finetune)

    e = sub.add_parser("eval", parents=[debug], help="evaluate a model on a benchmark")
    e.add_argument("--model", required=True, help="model to evaluate (a name, directory or hub id)")
    e.add_argument("--benchmark", default="tofu",
                   help="tofu, muse_news, hp or utility; several, comma-separated, are each "
                        "written as soon as they finish (eval-<benchmark>.nc)")
    e.add_argument("--forget-split", default="forget01", help="TOFU forget split")
    e.add_argument("--max-instances", type=int, default=None, help="cap on every evaluated set")
    e.add_argument("--retain-truth-ratios", default=None,
                   help="retain-model truth ratios (.npy/.json) or retain model directory, for "
                        "TOFU forget quality")
    e.add_argument("--data-dir", default=None, help="benchmark data root")
    e.add_argument("--out", default="runs/eval", help="directory for eval.nc and eval_summary.json")
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser("figures", parents=[debug], help="write the paper figures of run directories (PNG + PDF)")
    g.add_argument("run_dirs", nargs="+", help="run directories (of unlearn or sweep)")
    g.add_argument("--out", default="figures", help="directory for the figures")
    g.set_defaults(func=cmd_figures)
    return p


EXPECTED = (ValueError, OSError, RuntimeError, LookupError)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(argv).parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        print(f"geffect: {err or 'interrupted'}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        if args.debug:
            raise
        text = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, EXPECTED):
            text = f"{type(err).__name__}: {text} (rerun with --debug for the traceback)"
        raise SystemExit(f"geffect: error: {text}") from None


if __name__ == "__main__":
    main()
