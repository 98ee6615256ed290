"""Kind names are compared in one place: ``maild/rules/kinds.py``.

Everything that differs between contract kinds is an entry of ``kinds.KINDS``;
the rest of the package asks that table (``rules_of(kind).packages``, ...), so a
new kind is one entry plus its templates' wording. Read from the source (ast):
a comparison (``==``, ``!=``, ``in``, ``not in``, ``match``/``case``) with a kind
name as a string literal anywhere else fails here, and so does picking one kind's
entry by its name (``rules_of("sla")``, ``KINDS["prepaid"]``, ``TIER_BY_KIND[...]``), and passing a kind
name to any call (``_contracts(report, "sla")``, ``f(kind="prepaid")``: the callee compares it; a
chart's ``key=`` is its own name and passes). Kind names as data (the
templates, the i18n label tables in ``billing/html.py``, ``ops/check.py``'s
sample contexts, the ``ContractKind`` Literal) are not comparisons and pass.
"""
from __future__ import annotations

import ast
from pathlib import Path

import maild
from maild.rules.records import CONTRACT_KINDS

PACKAGE = Path(maild.__file__).parent
HOME = PACKAGE / "rules" / "kinds.py"
TABLES = {"KINDS", "TIER_BY_KIND"}
# keyword arguments that name a thing of their own, not a kind: a chart's key ("sla": the reaction chart)
KEYS = {"key"}


def _names_a_kind(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in CONTRACT_KINDS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_kind(element) for element in node.elts)
    return False


def _called(node: ast.AST) -> str:
    """``rules_of`` for ``rules_of`` and ``kinds.rules_of``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def kind_comparisons(source: str, filename: str) -> list[str]:
    """``file:line: code`` for every comparison with a kind name literal in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare) and any(_names_a_kind(n) for n in (node.left, *node.comparators)):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.MatchValue) and _names_a_kind(node.value):
            found.append(f"{filename}:{node.lineno}: case {ast.unparse(node.value)}")
        elif (isinstance(node, ast.Call) and _called(node.func) == "rules_of" and node.args
              and _names_a_kind(node.args[0])):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and _called(node.value) in TABLES and _names_a_kind(node.slice):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and any(
                _names_a_kind(a) for a in (*node.args, *(k.value for k in node.keywords if k.arg not in KEYS))):
            # a kind passed by name: the callee compares it or picks by it (``_contracts(report, "sla")``)
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_kind_name_is_compared_outside_the_kind_table() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != HOME:
            found += kind_comparisons(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert found == [], "ask maild.rules.kinds (rules_of(kind).<rule>) instead:\n" + "\n".join(found)


def test_the_check_sees_each_form_of_comparison() -> None:
    source = '''
if contract.kind == "sla": pass
if "prepaid" != kind: pass
if kind in ("prepaid", "occasional"): pass
if kind not in {"sla"}: pass
ok = [c for c in contracts if c["kind"] == "occasional"]
match kind:
    case "sla": pass
late = rules_of("prepaid").packages or kinds.KINDS["sla"].tier or TIER_BY_KIND["occasional"]
rows = _contracts(report, "sla")
rows = contracts_of(report, kinds=("prepaid", "sla"))
Column("contract_kind", String(16), default="occasional")
'''
    assert sorted(int(line.split(":")[1]) for line in kind_comparisons(source, "x.py")) == [
        2, 3, 4, 5, 6, 8, 9, 9, 9, 10, 11, 12]
    # data, not a comparison
    assert kind_comparisons('LABELS = {"sla": "Service contract"}\nkind: str = "occasional"\n'
                            'if status == "open": pass\nChart(key="sla", kind="barh")\nf(c.kind, "open")\n',
                            "x.py") == []

