"""The package's layers: each imports only the ones below it, and no modules import each other in
a circle. The layer map is written here, once; the README's layout section shows the same tree.

Every import counts, at module level or inside a function (both run), except those under
`if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "wno"

# Lowest first. A module belongs to the longest prefix that names it.
LAYERS = {
    "wno": 0,  # the package's own __init__ (a docstring and the version)
    "wno.base": 0,  # leaf modules: errors, variants, data set facts, sizes, wavelet levels, utils
    "wno.model": 1,  # wavelets, tokens, positional encodings, kernel, attention paths, W-MSA, ViT
    "wno.training": 2,  # config, data, the loop, train_utils, measure, compare
    "wno.train_utils": 2,  # the original description's import path of wno.training.train_utils
    "wno.platform": 3,  # spec, storage, queue, worker, tracking, report, doctor
    "wno.cli": 4,  # Typer, thin
    "wno.__main__": 4,
}
NAMES = {0: "base", 1: "model", 2: "training", 3: "platform", 4: "cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, known: dict[str, Path]) -> dict[str, int]:
    """{wno module imported: line} for the file at `path` (a package imported by name counts as
    its __init__; `from pkg import name` counts as the submodule when `name` is one)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                targets.append(sub if sub in known else node.module)
        for target in targets:
            if target == "wno" or target.startswith("wno."):
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                found.setdefault(target, node.lineno)
    return found


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_every_module_is_in_a_layer():
    for name in modules():
        assert any(name == k or name.startswith(k + ".") for k in LAYERS), name


def test_layers_only_import_downwards():
    upward = [f"{src} ({NAMES[layer(src)]}) imports {dst} ({NAMES[layer(dst)]}) at line {line}"
              for src, deps in graph().items() for dst, line in deps.items()
              if layer(dst) > layer(src)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_find_cycles_finds_a_circle():
    """The checker itself: a two-module circle and a three-module one are found, a chain is not."""
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}}) == []


def test_no_import_circles():
    edges = {src: {d for d in deps if d != src} for src, deps in graph().items()}
    cycles = find_cycles(edges)
    assert not cycles, "modules importing each other in a circle: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_imports_are_resolved_against_real_modules():
    """Guards the walker: known edges of the tree are seen (a walker that saw nothing would pass
    the two tests above)."""
    g = graph()
    assert "wno.platform.storage" in g["wno.platform.queue"]
    assert "wno.base.errors" in g["wno.platform.queue"]
    assert "wno.platform.tracking" in g["wno.cli.worker"]  # the worker's tracking, wired in
    assert "wno.platform.report.data" in g["wno.platform.report.html"]


@pytest.mark.parametrize("kind", ["cli", "platform"])
def test_the_layer_above_may_be_absent(tmp_path, kind):
    """The platform works from Python without Typer or the CLI; the training layer without the
    platform. A study is created, listed and reported in a process where the layer above (and
    Typer) cannot be imported."""
    blocked = {"cli": ["typer", "wno.cli"], "platform": ["typer", "wno.cli", "wno.platform",
                                                           "optuna", "mlflow"]}[kind]
    if kind == "cli":
        body = f"""
from wno.platform.queue import StudyQueue
from wno.platform.spec import load_spec
from wno.platform.report import build_report, render
url = "sqlite:///{tmp_path / 'optuna.db'}"
q = StudyQueue(url, create=True)
assert q.create(load_spec({str(REPO / 'studies' / 'smoke.yaml')!r})).added > 0
assert "smoke" in render(build_report("smoke", url, curves=False), "md")
"""
    else:
        body = """
from wno.training import TrainConfig
from wno.model import build_model
from wno.training.measure import model_cost
cfg = TrainConfig(model_size="micro", token_layout="patch", token_patch=4).validate()
assert model_cost(build_model(cfg), cfg).params > 0
"""
    code = ("import sys\n"
            f"for name in {blocked!r}:\n"
            "    sys.modules[name] = None  # `import name` now raises ImportError\n" + body)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
