"""The package's imports run one way: cli -> ops -> intake -> desk -> billing/outbound -> rules/storage.

Read from the source (ast), every import counts: at the top, inside a function,
under ``TYPE_CHECKING``. ``config`` and ``errors`` sit at the top of the package
and everyone may use them; they themselves use only ``errors`` and the pure
``rules``. A folder may import its own modules and anything below it, never
above; and no two modules may import each other, directly or round a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import maild

PACKAGE = Path(maild.__file__).parent
LAYERS = ("cli", "ops", "intake", "desk", "billing outbound", "rules storage")
RANK = {folder: rank for rank, names in enumerate(LAYERS) for folder in names.split()}
# may import only these (besides the standard library and third parties)
SHARED = {"errors": set(), "config": {"errors", "rules"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The maild modules a file imports (``from maild.x import y`` counts y when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("maild"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("maild"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _exists(candidate) else base)
    return {name for name in found if name != "maild"}


def _exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def _place(module: str) -> str:
    """The folder (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imported in graph.items():
        here = _place(module)
        for target in sorted(imported):
            there = _place(target)
            if there == here or there in SHARED and here not in SHARED:
                continue
            if here in SHARED:
                if there not in SHARED[here]:
                    problems.append(f"{module} imports {target}: {here} may use only {sorted(SHARED[here])}")
            elif there in SHARED:
                continue
            elif here in RANK and there in RANK and RANK[there] < RANK[here]:
                problems.append(f"{module} imports {target}: {there}/ is above {here}/")
            elif here not in RANK and here not in SHARED and here != "":
                problems.append(f"{module}: {here}/ is not a known folder")
    return sorted(problems)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of imports, each once (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_run_one_way() -> None:
    assert layer_violations(_graph()) == []


def test_no_import_circles() -> None:
    assert cycles(_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_circle() -> None:
    """The checks themselves: an import from below to above, and a circle, are both named."""
    graph = {"maild.storage.store": {"maild.intake.thread"}, "maild.intake.thread": set(),
             "maild.cli.main": {"maild.cli.admin"}, "maild.cli.admin": {"maild.cli.main"},
             "maild.config": {"maild.intake.mailbox"}, "maild.intake.mailbox": set()}
    assert layer_violations(graph) == [
        "maild.config imports maild.intake.mailbox: config may use only ['errors', 'rules']",
        "maild.storage.store imports maild.intake.thread: intake/ is above storage/",
    ]
    assert cycles(graph) == [["maild.cli.admin", "maild.cli.main"]]


def test_loading_the_config_imports_no_network_client() -> None:
    """A config check must not need imapclient or the SMTP client (nor pull them in)."""
    import subprocess
    import sys

    code = ("import sys, maild.config; "
            "print(sorted(m for m in ('imapclient', 'maild.outbound.smtp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
