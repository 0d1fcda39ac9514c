"""The layering of docs/architecture.md is a check, not a promise: the import contracts in
pyproject.toml hold for the code as it is, and they are not vacuous."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_every_import_contract_is_kept():
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", result.stdout)
    assert kept and int(kept[1]) == len(CONFIG["contracts"]) and kept[2] == "0", result.stdout[-2000:]


def test_no_contract_is_waived_without_a_reason():
    # ignore_imports would turn a contract into a list of exceptions: none are allowed.
    assert all("ignore_imports" not in contract for contract in CONFIG["contracts"])


def test_the_contracts_see_the_real_graph():
    # A contract over modules that import nothing proves nothing: the composition root must
    # really assemble every component and the simulator, and the cores must be non-empty.
    graph = grimp.build_graph(*CONFIG["root_packages"])
    for component in ("mt5fleet.client", "mt5fleet.workers", "mt5fleet.operator", "mt5fleet.client.sim"):
        assert graph.chain_exists(importer="mt5fleet.launcher", imported=component, as_packages=True), component
    for core in ("mt5fleet.proto.domain", "mt5fleet.client.core", "mt5fleet.workers.core", "mt5fleet.operator.core"):
        assert len(graph.find_children(core)) >= 3, core
