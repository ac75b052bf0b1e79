"""`geffect` command line: unlearn, finetune, eval, sweep, figures.

Every run flag maps to one field of `RunConfig`; method hyperparameters get one flag per field
of the registered objectives (`--beta`, `--alpha`, `--r` a.k.a. `--smoothing-rate`, ...), so
`geffect unlearn --help` lists them all.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .config import RunConfig
from .objectives import REGISTRY

TYPES = {"float": float, "int": int, "str": str, "bool": lambda s: s.lower() in ("1", "true", "yes"),
         "float | None": float, "int | None": int, "str | None": str}
ALIASES = {"r": ["--smoothing-rate"]}


def _hparam_fields() -> dict[str, tuple[type, list[str]]]:
    """Every hyperparameter of every registered objective -> (type, methods using it)."""
    seen: dict[str, tuple[type, list[str]]] = {}
    for name, cls in sorted(REGISTRY.items()):
        for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else []:
            typ = TYPES.get(str(f.type), str)
            seen.setdefault(f.name, (typ, []))[1].append(name)
    return seen


def add_run_flags(p: argparse.ArgumentParser, skip=(), skip_hparams=()) -> None:
    for f in dataclasses.fields(RunConfig):
        if f.name == "hparams" or f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        typ = TYPES.get(str(f.type), str)
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=typ, default=default,
                       help=f"(default: {default})")
    hp = p.add_argument_group("method hyperparameters (method default when not given)")
    for name, (typ, methods) in _hparam_fields().items():
        if name in skip_hparams:
            continue
        hp.add_argument(f"--{name.replace('_', '-')}", *ALIASES.get(name, []), dest=f"hp_{name}",
                        type=typ, default=None, help=f"used by {', '.join(methods)}")


def config_from_args(args: argparse.Namespace, **override) -> RunConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
              if hasattr(args, f.name)}
    values.update(override)
    method = values.get("method", "ga")
    if method not in REGISTRY:
        raise SystemExit(f"geffect: unknown method {method!r}; expected one of {sorted(REGISTRY)}")
    fields = {f.name for f in dataclasses.fields(REGISTRY[method])}
    given = {k[3:]: v for k, v in vars(args).items() if k.startswith("hp_") and v is not None}
    foreign = sorted(set(given) - fields)
    if foreign:
        raise SystemExit(f"geffect: method {method!r} takes {sorted(fields)}; got {foreign}")
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
    from .evaluation import evaluate, summary_json
    from .models import load_model
    from .engine import save_eval
    import json

    model, tok = load_model(args.model)
    ds = evaluate(model, tok, args.benchmark, forget_split=args.forget_split, data_dir=args.data_dir,
                  max_instances=args.max_instances, retain_truth_ratios=args.retain_truth_ratios)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_eval(ds, out / "eval.nc", append=False)
    summary = summary_json(ds)
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=1))
    for k, v in summary.items():
        print(f"{k:32s} {v:.4f}" if isinstance(v, float) else f"{k:32s} {v}")


def cmd_sweep(args) -> None:
    from .sweep import sweep

    base = config_from_args(args)
    rates = [float(x) for x in args.smoothing_rates.split(",")]
    sweep(base, rates, args.conventions.split(","), Path(args.out))


def cmd_figures(args) -> None:
    from analysis.figures import write_figures

    for path in write_figures([Path(p) for p in args.run_dirs], Path(args.out)):
        print(path)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geffect", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("unlearn", help="run one unlearning job (resumable)")
    add_run_flags(u)
    u.set_defaults(func=cmd_unlearn)

    s = sub.add_parser("sweep", help="grid over SGA smoothing rates and conventions (resumable)")
    add_run_flags(s, skip_hparams=("r", "convention"))
    s.add_argument("--smoothing-rates", default="-1,-0.5,0,0.25,0.5,0.8")
    s.add_argument("--conventions", "--convention", default="gls")
    s.set_defaults(func=cmd_sweep, method="sga")

    f = sub.add_parser("finetune", help="train TOFU target and retain models on a subset")
    f.add_argument("--model", default="smollm2-135m")
    f.add_argument("--out", default=".cache/finetuned")
    f.add_argument("--forget-split", default="forget01")
    f.add_argument("--n-retain", type=int, default=40, help="retain records the models also learn")
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--batch-size", type=int, default=8)
    f.add_argument("--max-length", type=int, default=128)
    f.add_argument("--data-dir", default=None)
    f.add_argument("--which", default="both", choices=["both", "target", "retain"])
    f.set_defaults(func=cmd_finetune)

    e = sub.add_parser("eval", help="evaluate a model on a benchmark")
    e.add_argument("--model", required=True)
    e.add_argument("--benchmark", default="tofu", choices=["tofu", "muse_news", "hp", "utility"])
    e.add_argument("--forget-split", default="forget01")
    e.add_argument("--max-instances", type=int, default=None)
    e.add_argument("--retain-truth-ratios", default=None)
    e.add_argument("--data-dir", default=None)
    e.add_argument("--out", default="runs/eval")
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser("figures", help="write the paper figures of run directories (PNG + PDF)")
    g.add_argument("run_dirs", nargs="+")
    g.add_argument("--out", default="figures")
    g.set_defaults(func=cmd_figures)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"geffect {args.command}: {err}")


if __name__ == "__main__":
    main()
