"""The package layout users install: mt5fleet.* from the top-level folders, no bare names."""

from __future__ import annotations

import importlib
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FOLDERS = {"operator": "mt5fleet.operator", "workers": "mt5fleet.workers",
           "client": "mt5fleet.client", "proto": "mt5fleet.proto", "launcher": "mt5fleet.launcher"}


def test_stdlib_operator_is_untouched_under_pytest():
    import operator

    assert Path(operator.__file__).parent == Path(sysconfig.get_path("stdlib"))
    assert operator.itemgetter(1)([5, 6]) == 6


@pytest.mark.parametrize("module", sorted(FOLDERS.values()))
def test_each_folder_imports_as_mt5fleet_subpackage(module):
    package = importlib.import_module(module)
    folder = module.split(".")[1]
    assert Path(package.__file__).parent == REPO / folder


def _run_in_repo_root(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flags", [[], ["-S"]], ids=["site", "no-site"])
def test_bare_operator_from_repo_root_is_the_stdlib(flags):
    # With -S nothing pre-imports operator, so the checkout's folder is found first.
    code = "import operator; print(operator.__file__); print(operator.add(2, 3))"
    result = _run_in_repo_root(*flags, "-c", code)
    assert result.returncode == 0, result.stderr
    path, total = result.stdout.split()
    assert "site-packages" not in path and Path(path).name == "operator.py"
    assert Path(path).parent != REPO / "operator"
    assert total == "5"


@pytest.mark.parametrize("folder", ["workers", "client", "proto", "launcher"])
def test_bare_folder_import_is_refused_with_the_right_name(folder):
    result = _run_in_repo_root("-c", f"import {folder}")
    assert result.returncode != 0
    assert f"import mt5fleet.{folder}" in result.stderr


def test_pyproject_maps_every_package_folder():
    tool = PYPROJECT["tool"]["setuptools"]
    assert tool["package-dir"] == {pkg: folder for folder, pkg in FOLDERS.items()}
    listed = set(tool["packages"])
    on_disk = {
        FOLDERS[init.relative_to(REPO).parts[0]] + "".join(f".{p}" for p in init.relative_to(REPO).parts[1:-1])
        for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py")
    }
    assert on_disk == listed, f"packages missing from pyproject: {on_disk - listed}; stale: {listed - on_disk}"


def test_extras_and_the_windows_only_metatrader5():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"agent", "operator", "worker", "dev"} <= set(extras)
    mt5 = [d for d in extras["agent"] if d.startswith("MetaTrader5")]
    assert mt5 and "sys_platform == 'win32'" in mt5[0]
    assert not any(d.startswith(("kopf", "kubernetes")) for d in extras["agent"] + PYPROJECT["project"]["dependencies"])
    for needed in ("kopf", "kubernetes"):
        assert any(d.startswith(needed) for d in extras["operator"])


def test_console_script_runs_and_lists_subcommands():
    assert PYPROJECT["project"]["scripts"]["mt5fleet"] == "mt5fleet.launcher.cli:main"
    result = subprocess.run([sys.executable, "-m", "mt5fleet.launcher.cli", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "nats" in result.stdout
    nats_help = subprocess.run([sys.executable, "-m", "mt5fleet.launcher.cli", "nats", "--help"],
                               capture_output=True, text=True, timeout=60)
    assert "bootstrap" in nats_help.stdout and "embedded" in nats_help.stdout
