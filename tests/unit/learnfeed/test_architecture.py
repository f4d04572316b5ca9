"""learnfeed's services stay in their own rooms: each built in one place, none reaching
into infrastructure or into another service's package."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import learnfeed

SRC = Path(learnfeed.__file__).parent
SERVICES = ("catalog", "feed", "gateway", "identity", "push", "recommender")


def modules() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text()))
        for path in sorted(SRC.rglob("*.py"))
        if "/v1/" not in str(path)
    ]


def imported(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_module_uses_the_nats_client():
    offenders = [
        f"{path.relative_to(SRC)}: {name}"
        for path, tree in modules()
        for name in imported(tree)
        if name == "nats" or name.startswith("nats.")
    ]
    assert offenders == []


def test_no_service_imports_another_services_package():
    offenders = []
    for path, tree in modules():
        parts = path.relative_to(SRC).parts
        home = parts[0] if len(parts) > 1 else None
        for name in imported(tree):
            segments = name.split(".")
            foreign = len(segments) > 1 and segments[1] in SERVICES and segments[1] != home
            if segments[0] == "learnfeed" and foreign:
                offenders.append(f"{path.relative_to(SRC)}: {name}")
    assert offenders == []


def test_service_packages_init_import_nothing():
    # `cellwork serve learnfeed.feed` finds create_service in learnfeed.feed.service; an
    # __init__ that imported it would load the whole service with any of its modules.
    offenders = [
        service
        for service in SERVICES
        if any(
            isinstance(node, ast.Import | ast.ImportFrom)
            for node in ast.walk(ast.parse((SRC / service / "__init__.py").read_text()))
        )
    ]
    assert offenders == []


def test_no_collaborator_is_asserted_present():
    offenders = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assert):
                continue
            test = node.test
            if (
                isinstance(test, ast.Compare)
                and any(isinstance(op, ast.IsNot) for op in test.ops)
                and any(isinstance(c, ast.Constant) and c.value is None for c in test.comparators)
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


def _assigns_attributes(function: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        and any(
            isinstance(target, ast.Attribute)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
        for node in ast.walk(function)
    )


def test_no_start_hook_fills_in_a_collaborator():
    """Collaborators are passed in where they are built, never set once started: a
    composition root holds no nested functions, and no start hook assigns an attribute."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    offenders = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, functions):
                continue
            hook = any(
                isinstance(d, ast.Attribute) and d.attr in ("on_start", "on_reconnect")
                for d in node.decorator_list
            )
            root_with_closures = node.name == "create_service" and any(
                isinstance(inner, functions) and inner is not node for inner in ast.walk(node)
            )
            if (hook and _assigns_attributes(node)) or root_with_closures:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert offenders == []


# The services with a database of their own: a store module beside their service.
STORED = tuple(s for s in SERVICES if (SRC / s / "store.py").exists())


def test_the_services_with_a_store_are_found() -> None:
    assert {"catalog", "feed", "identity", "recommender"} <= set(STORED)


@pytest.mark.parametrize("name", STORED)
def test_a_store_records_its_migrations_under_its_services_name(name: str) -> None:
    store = importlib.import_module(f"learnfeed.{name}.store")
    service = importlib.import_module(f"learnfeed.{name}.service")
    assert store.SERVICE_NAME == service.SERVICE_NAME


def test_the_checks_above_see_what_they_look_for():
    """Each rule catches a sample of what it forbids (a rule that matches nothing proves
    nothing)."""
    sample = ast.parse(
        "import nats\n"
        "from learnfeed.feed.domain import x\n"
        "def create_service(settings):\n"
        "    @service.on_start\n"
        "    async def fill(svc):\n"
        "        servicer.catalog = await svc.client('catalog')\n"
        "    assert servicer.catalog is not None\n"
    )
    assert "nats" in imported(sample)
    assert "learnfeed.feed.domain" in imported(sample)
    hooks = [n for n in ast.walk(sample) if isinstance(n, ast.AsyncFunctionDef)]
    assert hooks and _assigns_attributes(hooks[0])
    assert any(isinstance(n, ast.Assert) for n in ast.walk(sample))
