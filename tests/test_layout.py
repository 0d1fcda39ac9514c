"""The package layout users install: mt5fleet.* from the top-level folders, no bare names."""

from __future__ import annotations

import ast
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


# ------------------------------------------------------------------ tests import helpers, never tests

TESTS = Path(__file__).resolve().parent


def _is_test_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[-1].startswith("test_") or (len(parts) > 1 and parts[0] == "tests" and parts[1].startswith("test_"))


def imported_test_modules(source: str) -> list[str]:
    """The test modules ``source`` imports: ``import test_x``, ``from test_x import y``,
    ``from tests.test_x import y``, ``from tests import test_x``, ``from . import test_x``,
    ``importlib.import_module("test_x")``, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module and _is_test_module(module):
                found.append(module)
            elif module in ("", "tests"):
                found += [f"{module}.{alias.name}".lstrip(".") for alias in node.names
                          if alias.name.startswith("test_")]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _is_test_module(node.args[0].value)
              and ast.unparse(node.func).split(".")[-1] in ("import_module", "__import__")):
            found.append(node.args[0].value)
    return found


@pytest.mark.parametrize("offender", [
    "import test_crd", "import tests.test_crd as crd", "from test_crd import openapi_schema",
    "from tests.test_crd import openapi_schema", "from tests import test_crd", "from . import test_crd",
    "def helper():\n    from test_operator_handlers import stored_body\n",
    "import importlib\nimportlib.import_module('test_crd')",
])
def test_the_import_check_flags_a_test_module_imported_by_another(offender):
    assert imported_test_modules(offender), offender


def test_the_import_check_lets_helper_modules_through():
    helpers = "import factories\nfrom agent_harness import AgentHarness\nfrom waiting import wait_for\n" \
              "from operator_harness import stored_body\nimport pytest_asyncio\nfrom mt5fleet.proto import testing\n"
    assert imported_test_modules(helpers) == []


def test_no_test_module_imports_another_test_module():
    # Shared helpers live in factories.py, waiting.py, agent_harness.py, operator_harness.py
    # and conftest.py; a test module imported by another runs its tests twice and couples them.
    sources = sorted(TESTS.glob("test_*.py")) + sorted(p for p in TESTS.glob("*.py") if not p.name.startswith("test_"))
    assert len(sources) > 40
    offenders = {path.name: names for path in sources
                 if (names := imported_test_modules(path.read_text(encoding="utf-8")))}
    assert offenders == {}, f"test modules imported by other modules (move the shared part to a helper): {offenders}"
