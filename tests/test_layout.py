"""The layers of DESIGN.md, pinned: contracts at the top import neither the runtime nor the daemon; the runtime
imports no daemon; nothing in the appliance imports training, export, bench or torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPLIANCE = ROOT / "appliance"
CONTRACTS = ("grasp", "answer", "bundle", "geometry", "config", "hints")


def imported_modules(path: Path):
    """Absolute names of every module ``path`` imports (relative imports resolved), wherever the import stands."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # "from appliance import runtime"


def offenders(paths, forbidden) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {name}"
        for p in paths
        for name in imported_modules(p)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_appliance_never_imports_training_export_bench_or_torch():
    assert offenders(APPLIANCE.rglob("*.py"), ("training", "export", "bench", "torch", "transformers")) == []


def test_contracts_import_neither_the_runtime_nor_the_daemon():
    paths = [APPLIANCE / f"{name}.py" for name in CONTRACTS]
    assert all(p.is_file() for p in paths)
    assert (
        offenders(
            paths, ("appliance.runtime", "appliance.daemon", "appliance.camera", "appliance.robot", "appliance.sim")
        )
        == []
    )


def test_the_runtime_imports_no_daemon():
    assert offenders((APPLIANCE / "runtime").rglob("*.py"), ("appliance.daemon", "appliance.sim")) == []


def test_the_layers_are_folders():
    for folder in ("runtime", "daemon", "camera", "robot", "sim"):
        assert (APPLIANCE / folder / "__init__.py").is_file(), folder
    flat = sorted(p.stem for p in APPLIANCE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert flat == sorted((*CONTRACTS, "calibrate", "client", "demo", "keys", "selfcheck")), flat  # contracts and CLIs


def test_grasp_contract_needs_only_numpy():
    code = "import sys, appliance.grasp; print(sorted(m for m in ('PIL', 'yaml', 'training', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
