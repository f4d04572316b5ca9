"""learnfeed's services stay in their own rooms: each built in one place, none reaching
into infrastructure or into another service's package.

Each rule is a predicate over a module's syntax tree; the tests run it on every module
of learnfeed, and ``test_each_rule_catches_what_it_forbids`` runs the same predicates on
samples of what they forbid, so a rule that stopped matching would fail there."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import learnfeed

SRC = Path(learnfeed.__file__).parent
SERVICES = ("catalog", "feed", "gateway", "identity", "push", "recommender")
HOOKS = ("on_start", "on_reconnect")
# Ways to the raw NATS client: its package, the connection helper, a connection attribute.
NATS_NAMES = ("connect_nats",)
NATS_ATTRIBUTES = ("nats", "_nc", "jetstream")

Function = ast.FunctionDef | ast.AsyncFunctionDef


def modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(SRC)), ast.parse(path.read_text()))
        for path in sorted(SRC.rglob("*.py"))
        if "/v1/" not in str(path)
    ]


def imported(tree: ast.Module) -> list[str]:
    """Every module and ``module.name`` a tree imports; a relative import keeps its
    leading dots (learnfeed imports absolutely, so the rules report one as it is)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def nats_uses(tree: ast.Module) -> list[str]:
    """Imports of the NATS client or its connection helper, and connection attributes."""
    found = [
        name
        for name in imported(tree)
        if name.split(".")[0] == "nats" or name.rpartition(".")[2] in NATS_NAMES
    ]
    found += [
        f".{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in NATS_ATTRIBUTES
    ]
    return found


def foreign_imports(tree: ast.Module, home: str | None) -> list[str]:
    """Imports of another service's package (``home``: the service the module is in)."""
    out = []
    for name in imported(tree):
        if name.startswith("."):
            out.append(name)  # relative: say so, learnfeed imports absolutely
            continue
        segments = name.split(".")
        service = segments[1] if segments[0] == "learnfeed" and len(segments) > 1 else None
        if service in SERVICES and service != home:
            out.append(name)
    return out


def asserted_present(tree: ast.Module) -> list[int]:
    """Lines of ``assert x is not None``."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Assert)
        and isinstance(node.test, ast.Compare)
        and any(isinstance(op, ast.IsNot) for op in node.test.ops)
        and any(isinstance(c, ast.Constant) and c.value is None for c in node.test.comparators)
    ]


def fills_in(function: ast.AST) -> bool:
    """True when a function assigns an attribute of anything but its own ``self``:
    ``servicer.catalog = ...`` or ``self.reader.feed = ...`` (``self.count = 0`` is its
    own state)."""
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and not (
                isinstance(target.value, ast.Name) and target.value.id == "self"
            ):
                return True
    return False


def hook_functions(trees: list[ast.Module]) -> list[Function]:
    """What is registered as a start or reconnect hook, in either form: decorated
    (``@service.on_start``) or passed (``service.on_start(DemoSeed(store))``,
    ``service.on_start(seed)``, ``service.on_reconnect(reader.forget_versions)``). A
    passed callable object counts by its ``__call__``, a bound method by every method of
    that name in learnfeed."""
    functions: dict[str, list[Function]] = {}
    calls: dict[str, list[Function]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, Function):
                functions.setdefault(node.name, []).append(node)
            if isinstance(node, ast.ClassDef):
                calls[node.name] = [
                    item
                    for item in node.body
                    if isinstance(item, Function) and item.name == "__call__"
                ]
    hooks: list[Function] = []
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, Function) and any(
                isinstance(d, ast.Attribute) and d.attr in HOOKS for d in node.decorator_list
            ):
                hooks.append(node)
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in HOOKS
            ):
                continue
            for argument in node.args:
                if isinstance(argument, ast.Name):
                    hooks += functions.get(argument.id, [])
                elif isinstance(argument, ast.Attribute):
                    hooks += functions.get(argument.attr, [])
                elif isinstance(argument, ast.Call) and isinstance(argument.func, ast.Name):
                    hooks += calls.get(argument.func.id, [])
    return hooks


def roots_with_closures(tree: ast.Module) -> list[int]:
    """Lines of composition roots that define functions inside themselves."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, Function)
        and node.name == "create_service"
        and any(isinstance(inner, Function) and inner is not node for inner in ast.walk(node))
    ]


def home_of(path: str) -> str | None:
    parts = Path(path).parts
    return parts[0] if len(parts) > 1 else None


def test_no_module_uses_the_nats_client():
    offenders = [f"{path}: {use}" for path, tree in modules() for use in nats_uses(tree)]
    assert offenders == []


def test_no_service_imports_another_services_package():
    offenders = [
        f"{path}: {name}"
        for path, tree in modules()
        for name in foreign_imports(tree, home_of(path))
    ]
    assert offenders == []


def test_service_packages_init_import_nothing():
    # `cellwork serve learnfeed.feed` finds create_service in learnfeed.feed.service; an
    # __init__ that imported it would load the whole service with any of its modules.
    offenders = [
        service
        for service in SERVICES
        if imported(ast.parse((SRC / service / "__init__.py").read_text()))
    ]
    assert offenders == []


def test_no_collaborator_is_asserted_present():
    offenders = [f"{path}:{line}" for path, tree in modules() for line in asserted_present(tree)]
    assert offenders == []


def test_no_start_hook_fills_in_a_collaborator():
    """Collaborators are passed in where they are built, never set once started."""
    trees = [tree for _, tree in modules()]
    hooks = hook_functions(trees)
    assert hooks, "learnfeed registers start or reconnect hooks: the search found none"
    assert [f"{hook.name}:{hook.lineno}" for hook in hooks if fills_in(hook)] == []
    offenders = [f"{path}:{line}" for path, tree in modules() for line in roots_with_closures(tree)]
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


def test_each_rule_catches_what_it_forbids():
    sample = ast.parse(
        "import nats\n"
        "from cellwork.events import connect_nats\n"
        "from learnfeed.feed.domain import x\n"
        "from .store import y\n"
        "class Seed:\n"
        "    async def __call__(self):\n"
        "        self.store.catalog = 1\n"
        "def create_service(settings):\n"
        "    service.on_start(Seed())\n"
        "    @service.on_start\n"
        "    async def fill():\n"
        "        servicer.catalog = await service.nats.request('x')\n"
        "    assert servicer.catalog is not None\n"
    )
    assert sorted(nats_uses(sample)) == [".nats", "cellwork.events.connect_nats", "nats"]
    assert foreign_imports(sample, home="gateway") == [
        "learnfeed.feed.domain",
        "learnfeed.feed.domain.x",
        ".store",
        ".store.y",
    ]
    assert foreign_imports(sample, home="feed") == [".store", ".store.y"]
    assert asserted_present(sample) == [13]
    hooks = hook_functions([sample])
    assert sorted(hook.name for hook in hooks) == ["__call__", "fill"]
    assert all(fills_in(hook) for hook in hooks)
    assert not fills_in(ast.parse("def f(self):\n    self.count = 0\n"))
    assert roots_with_closures(sample) == [8]
