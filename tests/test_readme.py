"""Every code example in README.md runs (issue 19): the README cannot drift from the code.

The test reads README.md at test time and runs every fenced `bash`/`sh`/`shell`/`python`
block, each in a fresh working directory. Shell lines are `geffect ...` commands, run
in-process through `unlearning.cli.main`. Where the README names the real model or a
long run, the swaps below make it the tiny model and a few steps (each with its reason);
everything else, every flag included, runs as written. Commands listed in SKIP do not run,
for the reason given. A command matching no rule fails the test: add a rule.
"""
import glob
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

SWAPS = [  # (README text, what runs here, why)
    ("smollm2-135m", "tiny-llama", "no pretrained model in the default tier"),
    ("--steps 20", "--steps 2", "time"),
    ("step-000020", "step-000002", "the checkpoint of --steps 2"),
    ("--probe-forget 16 --probe-retain 16", "--probe-forget 2 --probe-retain 2", "time"),
    ("--eval-every 10", "--eval-every 2 --eval-max-instances 1", "time"),
    ("--max-instances 40", "--max-instances 1", "time"),
    ("--n-retain 40", "--n-retain 4 --epochs 1", "time"),
    ("geffect_every=1,", "geffect_every=1, probe_forget=2, probe_retain=2,", "time"),
    ("=-1,-0.5,0,0.25,0.5,0.8", "=-0.5,0.5", "time: two rates of the grid"),
]
SKIP = {
    "make demo": "the SmolLM2 demo (about 15 min); its tiny preset runs in tests/unlearning/test_demo.py",
    "make test": "this test suite itself",
    "python -m analysis.notebooks": "needs the demo's runs (demo_out/runs); the runner "
                                    "is tested in tests/analysis/test_notebooks.py",
}


def blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"^```(bash|sh|shell|python)\n(.*?)^```", text, re.M | re.S)]


def shrink(text: str) -> str:
    for old, new, _ in SWAPS:
        text = text.replace(old, new)
    return text


def commands(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split(" #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def run_shell(block: str) -> None:
    from unlearning.cli import main

    for cmd in commands(block):
        if any(cmd.startswith(k) for k in SKIP):
            continue
        argv = shlex.split(shrink(cmd))
        if argv[0] != "geffect":
            raise AssertionError(f"README command {cmd!r} matches no rule in tests/test_readme.py")
        args = [a for x in argv[1:] for a in (sorted(glob.glob(x)) or [x])]
        if "--help" in args:
            with pytest.raises(SystemExit) as exit_:
                main(args)
            assert exit_.value.code == 0
        else:
            main(args)


def test_readme_has_examples():
    kinds = {lang for lang, _ in blocks()}
    assert {"bash", "python"} <= kinds


@pytest.mark.parametrize("index", range(len(blocks())),
                         ids=[b.strip().splitlines()[0][:40] for _, b in blocks()])
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lang, block = blocks()[index]
    if lang == "python":
        exec(compile(shrink(block), f"README.md block {index}", "exec"), {"__name__": "__readme__"})
    else:
        run_shell(block)
