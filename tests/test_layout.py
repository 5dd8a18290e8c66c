"""The parts import one way (docs/architecture.md), read from the source with ast, nothing executed.

nn <- weights <- numbers; data (leaf, but for weights.preprocessing); nn, weights, data <- training;
nn, weights, data, numbers, runtime <- deploy; runtime is a leaf of NumPy; codegen reads ONNX with
runtime's reader; the top-level modules (the public API and the CLI) may use everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "mobilenets"

# part -> the parts (or single modules) it may import. Anything not listed is refused.
ALLOWED: dict[str, set[str]] = {
    "nn": set(),
    "weights": {"nn"},
    "numbers": {"nn", "weights"},
    "data": {"weights.preprocessing"},  # images are normalised as the weights expect
    "training": {"nn", "weights", "data"},
    # The benchmark reports multiply-adds beside latency, so deploy reads numbers' profiler.
    "deploy": {"nn", "weights", "data", "numbers", "runtime"},
    "runtime": set(),
    "codegen": {"runtime"},
    # Measures the published grid on a backend (deploy's runners, codegen's C) against the papers' numbers.
    "search": {"nn", "weights", "data", "numbers", "training", "deploy", "runtime", "codegen"},
}
TOP_LEVEL = {"__init__", "__main__", "cli"}  # the public API and the command line: may import every part
NUMPY_ONLY = {"runtime", "codegen"}  # deployable without PyTorch or ONNX
FORBIDDEN_IN_NUMPY_ONLY = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "safetensors")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, function-level ones included."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if node.module is None:  # "from . import x": x is a module of that package
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def part_of(module: str, root_name: str) -> str | None:
    parts = module.split(".")
    if parts[0] != root_name or len(parts) < 2:
        return None
    return parts[1]


def allowed(source_part: str, target: str, root_name: str) -> bool:
    target_part = part_of(target, root_name)
    if target_part is None or target_part == source_part or source_part in TOP_LEVEL:
        return True
    rules = ALLOWED.get(source_part)
    if rules is None:
        return False
    dotted = ".".join(target.split(".")[1:])
    return any(dotted == rule or dotted.startswith(rule + ".") for rule in rules)


def import_violations(root: Path) -> list[str]:
    """Every import against the table, every torch/onnx import in a NumPy-only part, every cycle
    between parts; each as 'path:line: what'."""
    root_name = root.name
    problems, edges = [], {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        source_part = part_of(name, root_name) or "__init__"
        if source_part not in ALLOWED and source_part not in TOP_LEVEL:
            problems.append(
                f"{path.relative_to(root.parent)}: module outside the parts of docs/architecture.md"
            )
            continue
        for line, target in imports_of(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            top = target.split(".")[0]
            if source_part in NUMPY_ONLY and top in FORBIDDEN_IN_NUMPY_ONLY:
                problems.append(f"{where}: {source_part} imports {target} (NumPy only)")
            target_part = part_of(target, root_name)
            if target_part and target_part != source_part:
                edges.setdefault(source_part, set()).add(target_part)
                if not allowed(source_part, target, root_name):
                    problems.append(f"{where}: {source_part} imports {target}, against the one-way flow")
    problems += [f"import cycle between parts: {' -> '.join(cycle)}" for cycle in _cycles(edges)]
    return problems


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return cycles


def test_the_parts_import_one_way():
    assert import_violations(SOURCE) == []


def test_every_part_is_a_package_and_nothing_else_sits_at_the_top():
    packages = {p.name for p in SOURCE.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in SOURCE.glob("*.py")}
    assert packages == set(ALLOWED) | {"cli"}
    assert modules == {"__init__", "__main__"}


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_check_finds_a_wrong_direction_a_cycle_and_torch_in_the_runtime(tmp_path):
    """The checker itself, on a small package that breaks each rule once."""
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "nn/__init__.py": "",
            "nn/layers.py": "def f():\n    from ..weights import checkpoint\n",  # nn -> weights: wrong way
            "weights/__init__.py": "",
            "weights/checkpoint.py": "from ..nn.layers import f\n",
            "data/__init__.py": "from ..weights.checkpoint import x\n",  # only preprocessing is allowed
            "runtime/__init__.py": "",
            "runtime/ops.py": "import numpy\nimport torch.nn\n",
            "codegen/__init__.py": "from onnx import helper\nfrom ..runtime import ops\n",
        },
    )
    assert import_violations(root) == [
        "pkg/codegen/__init__.py:1: codegen imports onnx (NumPy only)",
        "pkg/data/__init__.py:1: data imports pkg.weights.checkpoint, against the one-way flow",
        "pkg/nn/layers.py:2: nn imports pkg.weights, against the one-way flow",
        "pkg/runtime/ops.py:2: runtime imports torch.nn (NumPy only)",
        "import cycle between parts: weights -> nn -> weights",
    ]


@pytest.mark.parametrize(
    ("source", "line", "target"),
    [
        ("pkg/deploy/export.py", "from ..training.evaluate import load\n", "pkg.training.evaluate"),
        ("pkg/numbers/figures.py", "from ..data import demo\n", "pkg.data"),
        ("pkg/runtime/model.py", "from ..codegen import plan\n", "pkg.codegen"),
    ],
)
def test_each_crossing_the_issue_names_is_refused(tmp_path, source, line, target):
    root = _write(tmp_path, {"__init__.py": "", source.removeprefix("pkg/"): line})
    part = source.split("/")[1]
    assert import_violations(root) == [f"{source}:1: {part} imports {target}, against the one-way flow"]
