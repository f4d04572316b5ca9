"""The public face of cellwork changes only on purpose, and never leans on learnfeed."""

import ast
import subprocess
import sys
from pathlib import Path

import cellwork
import cellwork.gateway

SRC = Path(cellwork.__file__).parent


def test_exported_names_are_pinned():
    assert sorted(cellwork.__all__) == [
        "AlreadyExists",
        "CallContext",
        "CallPolicy",
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


def test_the_gateway_kits_exported_names_are_pinned():
    assert sorted(cellwork.gateway.__all__) == [
        "BodyLimit",
        "Claims",
        "DependencyCheck",
        "ErrorBody",
        "HttpMetrics",
        "HttpServer",
        "JwtCodec",
        "JwtKeys",
        "LoadShedding",
        "PortTaken",
        "ReadinessCheck",
        "RequestContext",
        "TemplateRoute",
        "TokenBucketLimiter",
        "bearer_token",
        "edge_middleware",
        "error_body",
        "error_response",
        "error_responses",
        "gather_parts",
        "install_error_handlers",
        "json_error",
        "probe_routes",
    ]
    for name in cellwork.gateway.__all__:
        assert hasattr(cellwork.gateway, name), name


def test_the_platform_loads_without_fastapi():
    """FastAPI is the application's choice: importing the platform, the HTTP edge
    included, and building a Starlette edge app never loads it."""
    script = (
        "import sys, cellwork, cellwork.gateway, cellwork.service\n"
        "from starlette.applications import Starlette\n"
        "app = Starlette(routes=cellwork.gateway.probe_routes(),\n"
        "    middleware=cellwork.gateway.edge_middleware(max_body_bytes=1, call_timeout=1))\n"
        "cellwork.gateway.install_error_handlers(app)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastapi'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


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
        "cellwork.loadgen",
        "cellwork.observability",
        "cellwork.resilience",
        "cellwork.rpc",
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


def test_the_platform_needs_none_of_the_applications_dependencies():
    """What only learnfeed uses is its extra (``pip install cellwork[learnfeed]``): the
    platform's own modules never import it."""
    import tomllib

    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["learnfeed"]
    # distribution name -> the module it installs
    modules = {"argon2-cffi": "argon2", "numpy": "numpy", "fastapi": "fastapi"}
    names = {modules[req.split(">")[0].split("=")[0].strip()] for req in extra}
    assert names == {"argon2", "numpy", "fastapi"}
    assert not any(
        req.split(">")[0].split("=")[0].strip() in modules for req in project["dependencies"]
    )
    offenders = []
    for path in SRC.rglob("*.py"):
        # Module-level imports only: the gateway kit answers FastAPI's validation errors,
        # importing FastAPI inside a function, only where an application has loaded it.
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(SRC)}: {name}" for name in found if name.split(".")[0] in names
            ]
    assert offenders == []
