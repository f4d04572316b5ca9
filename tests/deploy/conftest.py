"""Deployment tests: the image, the chart, compose, nginx and the Prometheus rules,
each checked with the real tool. A tool that is missing is reported as a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
LOCAL_BASE = "localhost/debian-base:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/deploy/" in str(item.fspath):
            item.add_marker(pytest.mark.deploy)


@dataclass
class Engine:
    """A container engine that works here: docker with a daemon, or podman."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    base_image: str | None = None

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env={**os.environ, **self.env},
        )


def _podman() -> Engine | None:
    if shutil.which("podman") is None:
        return None
    engine = Engine(
        "podman", {"CONTAINERS_CONF": str(Path(__file__).parent / "podman-containers.conf")}
    )
    if engine.run("info", check=False, timeout=60).returncode != 0:
        return None
    if engine.run("image", "exists", LOCAL_BASE, check=False).returncode != 0:
        # No registry may be reachable: a Debian base built here from Debian's packages.
        if shutil.which("debootstrap") is None:
            return engine  # the default base image, pulled from a registry
        rootfs = Path("/tmp/cellwork-debian-rootfs")
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "bookworm",
                str(rootfs),
                "http://deb.debian.org/debian",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        # debootstrap leaves its downloaded packages behind: not part of a base image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "-", LOCAL_BASE],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
            timeout=600,
            env={**os.environ, **engine.env},
        )
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
    engine.base_image = LOCAL_BASE
    return engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    ):
        return Engine("docker")
    podman = _podman()
    if podman is None:
        pytest.skip("no container engine here (docker without a daemon, no podman)")
    return podman


@pytest.fixture(scope="session")
def image(engine: Engine) -> Iterator[str]:
    """The cellwork image, built from deploy/docker/Dockerfile."""
    tag = "localhost/cellwork:test"
    args = ["build", "--network=host", "-f", str(DEPLOY / "docker/Dockerfile"), "-t", tag]
    if engine.name == "podman":
        args.append("--format=docker")  # keeps HEALTHCHECK
    if engine.base_image:
        args += ["--build-arg", f"BASE_IMAGE={engine.base_image}"]
    if CA_BUNDLE.exists():
        args += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    engine.run(*args, str(REPO), timeout=1200)
    yield tag
