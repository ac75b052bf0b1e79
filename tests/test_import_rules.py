"""The direction of imports (STYLE.md): geffect never imports unlearning or analysis; in
unlearning only engine.py and the Trainer integration (which plays the engine's part inside a
`transformers.Trainer`) import geffect; analysis never imports torch (see tests/analysis)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_geffect_never_imports_unlearning_or_analysis():
    bad = {str(p.relative_to(ROOT)): _imports(p) & {"unlearning", "analysis"}
           for p in (ROOT / "geffect").rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_engine_imports_geffect():
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "unlearning").rglob("*.py")
                   if "geffect" in _imports(p))
    assert users == ["unlearning/engine.py", "unlearning/integrations/trainer.py"]
