"""The public face of cellwork changes only on purpose, and never leans on learnfeed."""

import ast
from pathlib import Path

import cellwork

SRC = Path(cellwork.__file__).parent


def test_exported_names_are_pinned():
    assert sorted(cellwork.__all__) == [
        "AlreadyExists",
        "CallContext",
        "CellworkError",
        "Client",
        "DeadlineExceeded",
        "FailedPrecondition",
        "Internal",
        "InvalidArgument",
        "MalformedJson",
        "MethodNotAllowed",
        "NoEndpoints",
        "NotFound",
        "Overloaded",
        "PayloadTooLarge",
        "PermissionDenied",
        "ResourceExhausted",
        "Service",
        "ServiceSettings",
        "Unauthenticated",
        "Unavailable",
        "ValidationFailed",
        "__version__",
        "current_call",
    ]
    for name in cellwork.__all__:
        assert hasattr(cellwork, name), name


def test_platform_never_imports_the_application():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "learnfeed"]
    assert offenders == []


def test_no_module_grows_past_six_hundred_lines():
    long = [
        str(p)
        for p in SRC.rglob("*.py")
        if "_pb2" not in p.name and len(p.read_text().splitlines()) > 600
    ]
    assert long == []


def test_the_application_uses_only_the_platforms_public_packages():
    """learnfeed imports cellwork's part packages (their ``__init__`` exports), never the
    modules inside them: the parts can be rearranged without touching services."""
    public = {
        "cellwork",
        "cellwork.cache",
        "cellwork.data",
        "cellwork.events",
        "cellwork.gateway",
        "cellwork.observability",
    }
    offenders = []
    for path in (SRC.parent / "learnfeed").rglob("*.py"):
        if "_pb2" in path.name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            if module.split(".")[0] == "cellwork" and module not in public:
                offenders.append(f"{path.name}: {module}")
    assert offenders == []
