"""The tests mirror the code: ``tests/unit`` and ``tests/integration`` hold one folder per
package of ``src/``, and ``test_<name>.py`` tests the module (or package) ``<name>`` of
its folder, so the tests of a module are found without searching."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KINDS = ("unit", "integration")

# Tests of the project as a whole, not of one module: where each sits is on purpose.
WHOLE_PROJECT = {
    "unit/test_layout.py": "this file: the layout of tests/",
    "unit/test_public_api.py": "cellwork's public face and what may import what",
    "unit/test_readme.py": "README's tables against the code",
    "unit/test_skip_policy.py": "the suite's own skip policy (tests/conftest.py)",
    "unit/learnfeed/test_architecture.py": "rules across all of learnfeed's services",
    "integration/learnfeed/test_shared_database.py": "every service's store in one database",
}


def misplaced(tests: Iterable[str], sources: set[str]) -> list[str]:
    """The test modules (``unit/...`` paths) that mirror no module of ``sources``.

    ``sources`` are paths under ``src/`` of modules (``cellwork/rpc/client.py``) and of
    packages (``cellwork/rpc/__init__.py``). ``unit/cellwork/rpc/test_client.py`` mirrors
    ``cellwork/rpc/client.py`` or a package ``cellwork/rpc/client/``.
    """

    def mirrors(test: str) -> bool:
        _kind, *folders, name = test.split("/")
        folder = "/".join(folders)
        module = f"{folder}/{name.removeprefix('test_').removesuffix('.py')}"
        in_a_package = bool(folders) and f"{folder}/__init__.py" in sources
        return in_a_package and (f"{module}.py" in sources or f"{module}/__init__.py" in sources)

    return [test for test in tests if test not in WHOLE_PROJECT and not mirrors(test)]


def source_modules() -> set[str]:
    src = REPO / "src"
    return {str(path.relative_to(src)) for path in src.rglob("*.py")}


def suite_modules() -> list[str]:
    tests = REPO / "tests"
    return sorted(
        str(path.relative_to(tests)) for kind in KINDS for path in (tests / kind).rglob("test_*.py")
    )


def test_every_test_module_mirrors_a_module_of_src() -> None:
    found = suite_modules()
    assert len(found) > 50  # the walk sees the suite
    assert misplaced(found, source_modules()) == [], (
        "move each to tests/<kind>/<package path>/test_<module>.py, or list it in "
        "WHOLE_PROJECT if it tests the project as a whole"
    )


def test_every_folder_of_tests_is_a_package() -> None:
    # Test modules are imported by their dotted path (tests.unit.cellwork.rpc.test_context),
    # so two test_service.py files in different folders do not collide.
    folders = {
        path.parent
        for path in (REPO / "tests").rglob("*.py")
        if path.name.startswith(("test_", "conftest"))
    }
    assert (
        sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").exists()) == []
    )


def test_the_mirror_check_sees_what_it_looks_for() -> None:
    sources = {
        "cellwork/__init__.py",
        "cellwork/errors.py",
        "cellwork/rpc/__init__.py",
        "cellwork/rpc/client.py",
        "cellwork/events/__init__.py",
        "learnfeed/__init__.py",
        "learnfeed/feed/__init__.py",
    }
    assert (
        misplaced(
            [
                "unit/cellwork/test_errors.py",
                "unit/cellwork/rpc/test_client.py",
                "integration/cellwork/test_events.py",  # the package cellwork/events/
                "unit/learnfeed/test_feed.py",
                "unit/learnfeed/test_architecture.py",  # on the whole-project list
            ],
            sources,
        )
        == []
    )
    assert misplaced(
        [
            "unit/test_backoff.py",  # flat, beside no package
            "unit/cellwork/rpc/test_server.py",  # no such module
            "integration/cellwork/balancing/test_balancer.py",  # no such package
            "unit/cellwork/rpc/v1/test_client.py",  # no such folder
        ],
        sources,
    ) == [
        "unit/test_backoff.py",
        "unit/cellwork/rpc/test_server.py",
        "integration/cellwork/balancing/test_balancer.py",
        "unit/cellwork/rpc/v1/test_client.py",
    ]
