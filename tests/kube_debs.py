"""Debian packages from another suite, fetched without touching the machine's apt set-up.

The machine's sources stay what they are (bookworm); this keeps a private apt
configuration, package index and download area under the build cache (``APT_CONFIG``),
resolves the dependencies of a few root packages itself, downloads them with
``apt-get download`` and unpacks them with ``dpkg -x``: nothing is installed.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class AptError(RuntimeError):
    """An apt or dpkg step failed; the message says which and why."""


class PrivateApt:
    """apt-get and apt-cache on a private configuration for one suite (e.g. ``sid``)."""

    def __init__(self, home: Path, suite: str) -> None:
        self.home = home
        self.suite = suite
        self.config = home / "apt.conf"
        self.lists = home / "lists"
        self._write_config()

    def _write_config(self) -> None:
        for folder in ("lists/partial", "cache/archives/partial", "etc/sources.list.d",
                       "etc/preferences.d", "etc/apt.conf.d"):
            (self.home / folder).mkdir(parents=True, exist_ok=True)
        (self.home / "etc/sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {self.suite} main\n")
        etc = self.home / "etc"
        settings = {
            "Dir::Etc::sourcelist": etc / "sources.list", "Dir::Etc::sourceparts": etc / "sources.list.d",
            "Dir::Etc::preferencesparts": etc / "preferences.d", "Dir::Etc::parts": etc / "apt.conf.d",
            "Dir::State::lists": self.lists, "Dir::State::status": "/dev/null",
            "Dir::Cache": self.home / "cache", "Dir::Cache::pkgcache": "", "Dir::Cache::srcpkgcache": "",
            "Acquire::Languages": "none", "Acquire::GzipIndexes": "false",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
            # Debian's own mirrors may serve a Release file past its Valid-Until here (the
            # machine's clock); the signature is still checked.
            "Acquire::Check-Valid-Until": "false", "Acquire::Check-Date": "false",
            "APT::Sandbox::User": getpass.getuser(),
        }
        self.config.write_text("".join(f'{key} "{value}";\n' for key, value in settings.items()))

    def _run(self, *args: str, cwd: Path | None = None, timeout: float = 600) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.config), "DEBIAN_FRONTEND": "noninteractive"}
        try:
            result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AptError(f"{' '.join(args[:2])} timed out after {timeout:.0f} s") from exc
        if result.returncode != 0 or "\nE: " in "\n" + result.stderr:
            raise AptError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    # ------------------------------------------------------------------ the index

    def packages_file(self) -> Path | None:
        found = sorted(self.lists.glob(f"*_dists_{self.suite}_main_binary-*_Packages"))
        return found[0] if found else None

    def index_age(self) -> float:
        """Seconds since the index was last refreshed (infinite when there is none)."""
        stamp = self.home / "updated"
        return time.time() - stamp.stat().st_mtime if stamp.exists() and self.packages_file() else float("inf")

    def update(self) -> None:
        self._run("apt-get", "update", "-q")
        if self.packages_file() is None:
            raise AptError(f"apt-get update brought no package index for {self.suite}")
        (self.home / "updated").touch()

    def resolve(self, roots: Iterable[str], follow: re.Pattern[str]) -> dict[str, str]:
        """``{package: version}`` for ``roots`` and, recursively, the dependencies whose
        names match ``follow`` (the Go sources; libc and the like are the host's business).
        Remembered per index and roots, so a warm run does not re-read the 60 MB index."""
        index = self.packages_file()
        if index is None:
            raise AptError(f"no package index for {self.suite}: run apt-get update first")
        roots = sorted(roots)
        stat = index.stat()
        memo_key = json.dumps([roots, follow.pattern, stat.st_size, stat.st_mtime_ns])
        which = hashlib.sha256(json.dumps([roots, follow.pattern]).encode()).hexdigest()[:12]
        memo = self.home / f"resolved-{which}.json"
        if memo.exists() and (saved := json.loads(memo.read_text())).get("key") == memo_key:
            return saved["packages"]
        packages = _resolve(_parse_index(index), roots, follow)
        memo.write_text(json.dumps({"key": memo_key, "packages": packages}, indent=1))
        return packages

    # ------------------------------------------------------------------ fetch and unpack

    def download(self, packages: dict[str, str], into: Path) -> list[Path]:
        into.mkdir(parents=True, exist_ok=True)
        pins = [f"{name}={version}" for name, version in sorted(packages.items())]
        self._run("apt-get", "download", "-q", *pins, cwd=into, timeout=1800)
        debs = sorted(into.glob("*.deb"))
        if len(debs) != len(pins):
            raise AptError(f"apt-get download brought {len(debs)} of {len(pins)} packages")
        return debs


def unpack(debs: list[Path], root: Path) -> None:
    """``dpkg -x`` every package into ``root`` (in parallel: it is mostly I/O)."""
    root.mkdir(parents=True, exist_ok=True)

    def one(deb: Path) -> None:
        result = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True)
        if result.returncode != 0:
            raise AptError(f"dpkg -x {deb.name} failed: {result.stderr.strip()}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, debs))


def fetch_and_unpack(apt: PrivateApt, packages: dict[str, str], root: Path) -> None:
    """Download ``packages`` into a scratch folder, unpack them into ``root``, drop the .debs."""
    with tempfile.TemporaryDirectory(dir=apt.home, prefix="debs-") as scratch:
        unpack(apt.download(packages, Path(scratch)), root)


# ---------------------------------------------------------------------- Packages parsing

_FIELDS = ("Package", "Version", "Depends", "Pre-Depends", "Provides", "Size")


def _parse_index(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """The index's packages by name, and which real packages provide each virtual name."""
    packages: dict[str, dict[str, str]] = {}
    providers: dict[str, list[str]] = {}
    record: dict[str, str] = {}

    def flush() -> None:
        name = record.get("Package")
        if name:
            packages[name] = dict(record)
            for provided in _split(record.get("Provides", "")):
                providers.setdefault(provided.split()[0], []).append(name)
        record.clear()

    with path.open(encoding="utf-8", errors="replace") as index:
        for line in index:
            if line == "\n":
                flush()
            elif line[0] not in " \t":
                key, _, value = line.partition(":")
                if key in _FIELDS:
                    record[key] = value.strip()
    flush()
    return packages, providers


def _split(field: str) -> list[str]:
    return [part.strip() for part in field.split(",") if part.strip()]


def _resolve(index: tuple[dict[str, dict[str, str]], dict[str, list[str]]], roots: list[str],
             follow: re.Pattern[str]) -> dict[str, str]:
    packages, providers = index
    chosen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in packages:
            raise AptError(f"package {name} is not in the index")
        chosen[name] = packages[name]["Version"]
        depends = _split(packages[name].get("Pre-Depends", "")) + _split(packages[name].get("Depends", ""))
        for group in depends:
            pick = _first_available(group, packages, providers)
            if pick is None:
                if any(follow.match(_bare(alt)) for alt in group.split("|")):
                    raise AptError(f"{name} depends on {group}, which the index does not have")
                continue
            if follow.match(pick):
                todo.append(pick)
    return dict(sorted(chosen.items()))


def _bare(alternative: str) -> str:
    """``golang-foo-dev (>= 1.2)`` and ``golang-foo-dev:any`` are both ``golang-foo-dev``."""
    return alternative.strip().split()[0].split(":")[0]


def _first_available(group: str, packages: dict, providers: dict) -> str | None:
    for alternative in group.split("|"):
        name = _bare(alternative)
        if name in packages:
            return name
        if name in providers:
            return providers[name][0]
    return None


def total_size(apt: PrivateApt, packages: dict[str, str]) -> int:
    """Bytes to download for ``packages`` (from the index; for the build's report)."""
    index = apt.packages_file()
    if index is None:
        return 0
    sizes, _ = _parse_index(index)
    return sum(int(sizes[name].get("Size", 0)) for name in packages if name in sizes)
