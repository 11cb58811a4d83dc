"""Every lab test module carries the `lab` marker, so `pytest -m "not lab"` never builds a lab."""

from __future__ import annotations

import ast
from pathlib import Path

LAB_TESTS = Path(__file__).resolve().parents[1] / "lab"


def marks_lab(module: ast.Module) -> bool:
    for node in module.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return "pytest.mark.lab" in ast.unparse(node.value)
    return False


def test_every_lab_test_module_is_marked_lab() -> None:
    modules = sorted(LAB_TESTS.glob("test_*.py"))
    assert modules
    unmarked = [m.name for m in modules if not marks_lab(ast.parse(m.read_text()))]
    assert unmarked == []
