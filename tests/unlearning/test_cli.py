"""The command line explains itself (issue 19, cases 6-8, 11, 12).

Expected failures are one line, `geffect: error: ...`, exit status 1, before any model is
loaded where the input alone is wrong; `--debug` shows the traceback; every flag has help.
"""
import dataclasses
import os
import subprocess
import sys

import pytest

import unlearning.engine as engine
import unlearning.models as models
from geffect.io import open_record
from unlearning.cli import HPARAM_DOCS, _hparam_fields, _methods, hparam_doc, main, parser
from unlearning.config import RunConfig, field_docs
from unlearning.sweep import sweep


def fail(argv) -> str:
    """The one line `main` exits with."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    text = str(err.value.code)
    assert text.startswith("geffect: error: ") and "\n" not in text, text
    return text


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: validation must come first."""
    def boom(*a, **kw):
        raise AssertionError("a model was loaded before the flags were validated")
    monkeypatch.setattr(engine, "load_model", boom)
    monkeypatch.setattr(models, "AutoModelForCausalLM", None)


BAD_FLAGS = [
    (["--dtype", "foo"], "'dtype' must be one of"),
    (["--grad-accum", "0"], "'grad_accum' must be an integer >= 1; got 0"),
    (["--steps", "-1"], "'steps' must be an integer >= 0; got -1"),
    (["--n-forget", "-5"], "'n_forget' must be an integer >= 1 or None; got -5"),
    (["--lr", "inf"], "'lr' must be a finite number >= 0; got inf"),
    (["--lr", "nan"], "'lr' must be a finite number"),
    (["--max-grad-norm", "0"], "'max_grad_norm' must be a finite number > 0"),
    (["--method", "sga", "--smoothing-rate", "nan"], "hyperparameter 'r' must be finite"),
    (["--method", "sga", "--smoothing-rate", "2"], "SGA gls needs r <= 1"),
    (["--method", "gaa"], "unknown method 'gaa'"),
    (["--method", "ga", "--smoothing-rate", "0.5"], "method 'ga' takes"),
    (["--normal-strategy", "closest"], "'normal_strategy' must be one of"),
    (["--schedule", "step"], "'schedule' must be one of"),
]


@pytest.mark.parametrize("flags,says", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_fail_in_one_line_before_any_model_loads(tmp_path, no_model, flags, says):
    assert says in fail(["unlearn", *flags, "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_k_larger_than_the_retain_set_says_why(tmp_path):
    text = fail(["unlearn", "--method", "sga", "--k", "9", "--n-retain", "4", "--out", str(tmp_path / "x")])
    assert "k=9 needs k-1=8 normal samples" in text and "has 4 records" in text
    text = fail(["unlearn", "--method", "sga", "--k", "9", "--n-retain", "4",
                 "--normal-strategy", "retain-random", "--out", str(tmp_path / "y")])
    assert "k=9 needs k-1=8 normal samples" in text


def test_sweep_validates_the_whole_grid_before_the_first_run(tmp_path, no_model):
    out = tmp_path / "sweep"
    assert "SGA gls needs r <= 1, got r=2.0" in fail(
        ["sweep", "--smoothing-rates", "0.5,2", "--out", str(out)])
    assert "'x' is not a float" in fail(["sweep", "--smoothing-rates", "0.5,x", "--out", str(out)])
    assert "convention must be one of" in fail(
        ["sweep", "--conventions", "../../evil", "--out", str(out)])
    assert not out.exists() and not (tmp_path / "evil").exists()
    with pytest.raises(ValueError, match="convention must be one of"):
        sweep(RunConfig(method="sga"), [0.5], ["gls", "../evil"], out)
    assert not out.exists()


def test_hub_ids_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set and it is not in the local"):
        models.load_model("someone/not-cached-model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **kw: False)
    with pytest.raises(FileNotFoundError, match="hub is unreachable"):
        models.load_model("someone/not-cached-model")


def test_expected_failures_exit_1_with_one_line_and_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "unlearning.cli", "unlearn", "--model", "org/none", "--out", str(tmp_path / "x")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].startswith("geffect: error: model 'org/none' is a hub id")
    assert "Traceback" not in p.stderr
    p = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "Traceback" in p.stderr


def test_divergence_and_unwritable_outputs_are_one_line(tmp_path):
    text = fail(["unlearn", "--optimizer", "sgd", "--lr", "1e6", "--steps", "6", "--n-forget", "4",
                 "--n-retain", "8", "--batch-size", "2", "--out", str(tmp_path / "d")])
    assert "diverged at step" in text and "last good checkpoint" in text
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "file" in fail(["unlearn", "--steps", "1", "--out", str(blocker / "run")])
    assert "file" in fail(["eval", "--model", "tiny-llama", "--out", str(blocker / "ev")])


def test_defaults_run(tmp_path, monkeypatch, capsys):
    """`geffect unlearn --out X` with no other flag (tiny-llama, TOFU forget01, 10 steps)."""
    main(["unlearn", "--out", str(tmp_path / "x")])
    assert open_record(tmp_path / "x" / "train.nc").step.values.tolist() == list(range(10))
    assert f"run written to {tmp_path / 'x'}" in capsys.readouterr().out


def _help(argv) -> str:
    with pytest.raises(SystemExit):
        main(argv)


def test_every_flag_has_a_sentence(capsys):
    docs = field_docs()
    assert set(docs) == {f.name for f in dataclasses.fields(RunConfig)}, "undocumented field"
    sub = parser(["unlearn"])._subparsers._group_actions[0].choices
    for name, p in sub.items():
        for action in p._actions:
            if action.help == "==SUPPRESS==":
                continue
            words = (action.help or "").split("(default")[0].split()
            assert len(words) >= 3, (name, action.option_strings, action.help)
    for method in _methods():
        for hp, (_, by_method) in _hparam_fields().items():
            if method in by_method:
                assert hparam_doc(method, hp), (method, hp)
    assert all(isinstance(k, str) or k[0] in _methods() for k in HPARAM_DOCS)


def test_method_help_shows_its_hyperparameters_with_meaning_and_default(capsys):
    _help(["unlearn", "--method", "sga", "--help"])
    text = capsys.readouterr().out
    assert "sga hyperparameters" in text and "smoothing rate" in text and "(default: 0.5)" in text
    assert "--beta" not in text                                     # another method's flag
    _help(["unlearn", "--help"])
    text = capsys.readouterr().out
    for method in _methods():
        assert f"{method} hyperparameters" in text
    assert "exponent of the token weight p^beta (0: GA) (default: 5.0)" in text     # wga's beta (issue 11: the G-effect authors' default)


def test_eval_writes_each_benchmark_as_it_finishes(tmp_path, monkeypatch):
    from unlearning.evaluation import run_eval

    import unlearning.evaluation as ev

    seen = []
    real = open_record
    real_evaluate = ev.evaluate

    def evaluate(model, tok, benchmark, **kw):
        if benchmark == "utility":                 # the first part is on disk before the second
            seen.append(real(tmp_path / "eval-tofu.nc", kind="eval").attrs.get("benchmark"))
            raise OSError("disk full")
        return real_evaluate(model, tok, benchmark, **kw)

    monkeypatch.setattr(ev, "evaluate", evaluate)
    with pytest.raises(OSError, match="disk full"):
        run_eval("tiny-llama", ["tofu", "utility"], tmp_path, forget_split="forget01",
                 max_instances=2, max_new_tokens=2, progress=False)
    assert seen and (tmp_path / "eval_summary-tofu.json").exists()
