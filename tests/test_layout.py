"""The dependency direction of DESIGN.md: the appliance imports nothing from training or export."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_appliance_never_imports_training_or_export():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "appliance").rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in {"training", "export", "torch", "transformers"}
    ]
    assert offenders == []


def test_grasp_contract_needs_only_numpy():
    code = "import sys, appliance.grasp; print(sorted(m for m in ('PIL', 'yaml', 'training', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
