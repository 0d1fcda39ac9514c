"""The trader's Windows install, checked from here (issue 16): the project's wheel, built
from this checkout, resolved as ``pip install "mt5fleet[agent]"`` on 64-bit Windows with
CPython 3.11, binary wheels only, against PyPI.

pip's ``--platform`` picks wheels for Windows but evaluates environment markers against the
machine it runs on, so ``MetaTrader5; sys_platform == 'win32'`` would silently drop out on
Linux. The markers are therefore evaluated here for Windows (``packaging``), for the
project's extra and for every resolved package's own requirements, and what pip left out is
resolved again until nothing is missing. The test fails when a dependency (MetaTrader5
included) has no Windows wheel, or when an operator-only or Linux-only package slips into
the agent's set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
WINDOWS = {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64",
           "python_version": "3.11", "python_full_version": "3.11.9", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "platform_release": "10", "implementation_version": "3.11.9"}
# The agent must install without the cluster's tooling (SPEC §1: extras).
NOT_FOR_THE_AGENT = {"kopf", "kubernetes", "nkeys", "jsonschema", "cel-python", "google-re2", "pyyaml", "rich",
                     "grpcio-tools", "uvloop"}
OFFLINE = ("NewConnectionError", "Could not fetch URL", "Temporary failure in name resolution",
           "Network is unreachable")

pytestmark = pytest.mark.slow


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the checkout (a build leaves build/ behind)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("proto", "client", "workers", "operator", "launcher"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    built = _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), ".", cwd=source)
    assert built.returncode == 0, built.stderr
    return next(out.glob("mt5fleet-*.whl"))


def _resolve(requirements: list[str], tmp: Path) -> dict:
    report = tmp / "report.json"
    done = _pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "--target",
                str(tmp / "target"), "--platform", "win_amd64", "--python-version", "3.11", "--implementation", "cp",
                "--only-binary=:all:", *requirements, cwd=tmp)
    if done.returncode != 0 and any(sign in done.stderr for sign in OFFLINE):
        pytest.skip(f"PyPI is not reachable from here: {done.stderr.strip().splitlines()[-1]}")
    if done.returncode != 0:
        raise ResolutionFailed(done.stderr)
    return json.loads(report.read_text())


class ResolutionFailed(AssertionError):
    pass


def _missing_on_windows(report: dict) -> list[str]:
    """Requirements that apply on Windows (their markers evaluated for it) but that pip,
    evaluating markers for this machine, did not resolve."""
    resolved = {canonicalize_name(item["metadata"]["name"]) for item in report["install"]}
    missing = []
    for item in report["install"]:
        extras = item.get("requested_extras") or [""]
        for line in item["metadata"].get("requires_dist") or ():
            requirement = Requirement(line)
            applies = requirement.marker is None or any(
                requirement.marker.evaluate(WINDOWS | {"extra": extra}) for extra in extras)
            if applies and canonicalize_name(requirement.name) not in resolved:
                requirement.marker = None
                missing.append(str(requirement))
    return missing


def windows_install_set(requirements: list[str], tmp: Path) -> dict:
    """pip's resolution for Windows, completed with what its markers say Windows needs."""
    wanted = list(requirements)
    for _ in range(6):
        report = _resolve(wanted, tmp)
        missing = _missing_on_windows(report)
        if not missing:
            return report
        wanted += missing
    raise AssertionError(f"the Windows requirements do not settle: still missing {missing}")


def test_the_agent_extra_installs_on_windows_from_binary_wheels(wheel, tmp_path):
    report = windows_install_set([f"{wheel}[agent]"], tmp_path)
    files = {canonicalize_name(i["metadata"]["name"]): i["download_info"]["url"].rsplit("/", 1)[-1]
             for i in report["install"]}
    print("\nmt5fleet[agent] on win_amd64 / CPython 3.11:\n" + "\n".join(f"  {f}" for f in sorted(files.values())))
    for name, filename in files.items():
        assert filename.endswith(".whl"), f"{name}: {filename} is not a wheel"
        tags = parse_wheel_filename(filename)[3]
        assert any(t.platform in ("win_amd64", "any") for t in tags), f"{name}: {filename} is not for 64-bit Windows"
    assert {"mt5fleet", "metatrader5", "aiohttp", "prometheus-client", "cryptography", "nats-py", "protobuf",
            "tzdata"} <= set(files), sorted(files)
    assert not NOT_FOR_THE_AGENT & set(files), NOT_FOR_THE_AGENT & set(files)
    # The status page works offline: its assets (vendored uPlot and its licence) ship in the wheel.
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    assert {f"mt5fleet/client/adapters/static/{name}" for name in
            ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE", "page.js", "page.css")} <= shipped


def test_a_linux_only_dependency_would_fail_the_check(tmp_path):
    """The check bites: uvloop publishes no Windows wheel."""
    with pytest.raises(ResolutionFailed):
        windows_install_set(["uvloop"], tmp_path)


def test_markers_are_read_for_windows_not_for_this_machine():
    report = {"install": [{"metadata": {"name": "mt5fleet", "requires_dist": [
        "MetaTrader5>=5.0.45; sys_platform == 'win32' and extra == 'agent'",
        "kopf>=1.37; extra == 'operator'", "tzdata; sys_platform == 'win32'", "uvloop; sys_platform == 'linux'"]},
        "requested_extras": ["agent"]}]}
    assert _missing_on_windows(report) == ["MetaTrader5>=5.0.45", "tzdata"]
