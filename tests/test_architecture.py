"""The house rules, checked on the source: stage order, no import cycles, the run-directory contract,
module size, and docs that name modules which exist (see docs/contributing.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SRC = REPO / "src"

#: Data flows one way: a module may import its own stage, earlier stages and the shared root
#: modules (errors, io, procs, progress…); experiments/explain and serve/dashboard are siblings.
STAGES = {
    "data": 1,
    "preprocess": 2,
    "models": 3,
    "training": 4,
    "evaluation": 5,
    "experiments": 6,
    "explain": 6,
    "serve": 7,
    "dashboard": 7,
}
#: Entry points that may import every stage.
TOP = {"cli", "benchmarks", "demo", "__main__"}
#: Shared helpers every stage may import (they import no stage themselves).
SHARED = {"reporting"}
#: Run-directory file names: spelled only in training/run_dir.py.
RUN_FILE_NAMES = (
    "config.yaml",
    "run.json",
    "model.json",
    "history.csv",
    "calibration.json",
    "provenance.json",
    "last.ckpt",
    "best.safetensors",
    "last.safetensors",
    "metrics.json",
    "predictions.parquet",
    "checkpoints",
)
RUN_DIR_MODULE = "mammocad.training.run_dir"
LONG_MODULE_LINES = 450
LONG_MODULE_MARKER = "Why one module:"


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name


def _imports(path: Path) -> set[str]:
    """Every mammocad module ``path`` imports, at module level or inside functions."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {_resolve(a.name) for a in node.names if a.name.startswith("mammocad")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mammocad"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                targets.add(full if full in MODULES else _resolve(node.module))
    return targets - {""}


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def _stage(module: str) -> int | None:
    """The stage number; 0 for shared root modules; None for entry points."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in SHARED or (parts[1] not in STAGES and parts[1] not in TOP):
        return 0
    if parts[1] in TOP:
        return None
    return STAGES[parts[1]]


def test_no_stage_imports_a_later_one() -> None:
    later = []
    for module, targets in GRAPH.items():
        own = _stage(module)
        if own is None:
            continue
        for target in targets:
            stage = _stage(target)
            if stage is None or stage > own:
                later.append(f"{module} -> {target}")
    assert not later, "imports of a later stage (function-level imports count too):\n" + "\n".join(sorted(later))


def test_no_import_cycles() -> None:
    """No cycle among modules, counting function-level imports (a lazy import hides a cycle, not removes it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_run_directory_file_names_only_in_run_dir() -> None:
    """Every run-directory file name is spelled once, in RunDir/EvaluationDir (docstrings aside)."""
    pattern = re.compile(r"^(?:[\w./-]*/)?(?:" + "|".join(re.escape(n) for n in RUN_FILE_NAMES) + r")$")
    found = []
    for module, path in MODULES.items():
        if module == RUN_DIR_MODULE:
            continue
        for line, text in _string_literals(path):
            if pattern.match(text):
                found.append(f"{path.relative_to(SRC)}:{line}: {text!r}")
    assert not found, "run-directory file names outside RunDir:\n" + "\n".join(found)


def test_long_modules_say_why() -> None:
    """A module over ~450 lines states in its docstring why it stays one module."""
    unexplained = []
    for path in MODULES.values():
        lines = path.read_text().count("\n")
        if lines <= LONG_MODULE_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if LONG_MODULE_MARKER not in doc:
            unexplained.append(f"{path.relative_to(SRC)} ({lines} lines)")
    assert not unexplained, f"modules over {LONG_MODULE_LINES} lines without '{LONG_MODULE_MARKER}':\n" + "\n".join(
        unexplained
    )


@pytest.mark.parametrize("doc", ["references.md", "contributing.md"])
def test_docs_name_modules_that_exist(doc: str) -> None:
    """Module paths the contributor docs cite (``models/heads/gagm.py``) exist."""
    text = (DOCS / doc).read_text()
    cited = set(re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)`", text)) - {p for p in text.split("`") if "my_" in p}
    assert cited, f"{doc} cites no module"
    repo_files = {path.as_posix() for folder in (SRC, REPO / "tests") for path in folder.rglob("*.py")}
    missing = sorted(p for p in cited if not any(f.endswith("/" + p) for f in repo_files))
    assert not missing, f"{doc} cites modules that do not exist: {missing}"
