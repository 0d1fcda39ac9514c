"""Builds the test suite's Kubernetes API server (tests/kube/apiserver) from Debian's
packaged Go sources, into a cache outside the repository.

    python tests/kube_build.py            # build, or reuse the build that matches
    python tests/kube_build.py --refresh  # check Debian for newer packages first

Nothing of Kubernetes is vendored: Debian sid packages the Go toolchain and the k8s.io
libraries (apiextensions-apiserver, apiserver, api, client-go, ...) as source, and the
machine keeps its own apt sources (see kube_debs.py). Steps, each skipped when its result
is already in the cache:

1. refresh a private sid package index (at most once a day, or with --refresh);
2. resolve the Go packages needed (``ROOT_PACKAGES`` and their golang-* dependencies);
3. download and unpack them (``root-<hash>``, ~330 MB of .debs, ~2.5 GB unpacked);
4. generate the built-in kinds' OpenAPI definitions with the packaged ``openapi-gen``;
5. ``go build`` offline in GOPATH mode (~4 min cold on 2 cores, seconds with a warm Go cache).

The binary is reused while the package versions and the Go sources' hash match. The cache
is ``$MT5FLEET_KUBE_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/mt5fleet/kube``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from kube_debs import AptError, PrivateApt, fetch_and_unpack, total_size

SOURCE = Path(__file__).resolve().parent / "kube" / "apiserver"
SUITE = "sid"
ROOT_PACKAGES = ("golang-go", "golang-k8s-apiextensions-apiserver-dev", "golang-k8s-component-helpers-dev",
                 "kube-openapi")
FOLLOW = re.compile(r"golang-")
INDEX_MAX_AGE = 24 * 3600
# Bump when a step below changes what it produces.
BUILD_FORMAT = "1"
IMPORT_PATH = "mt5fleet.io/kube-apiserver"
OPENAPI_PACKAGES = (
    "k8s.io/api/core/v1", "k8s.io/api/apps/v1", "k8s.io/api/autoscaling/v1", "k8s.io/api/coordination/v1",
    "k8s.io/api/rbac/v1", "k8s.io/api/policy/v1", "k8s.io/api/networking/v1",
    "k8s.io/apimachinery/pkg/apis/meta/v1", "k8s.io/apimachinery/pkg/runtime",
    "k8s.io/apimachinery/pkg/util/intstr", "k8s.io/apimachinery/pkg/api/resource",
    "k8s.io/apimachinery/pkg/version",
)  # part of the build's key (source_hash): a change here rebuilds

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """The server could not be built; the message says at which step."""


def cache_dir() -> Path:
    if explicit := os.environ.get("MT5FLEET_KUBE_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mt5fleet" / "kube"


def _log(message: str) -> None:
    print(f"[kube-build] {message}", file=sys.stderr, flush=True)


def source_hash() -> str:
    digest = hashlib.sha256(BUILD_FORMAT.encode() + b"\0" + "\0".join(OPENAPI_PACKAGES).encode())
    for path in sorted(SOURCE.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_server(log: Log = _log, refresh: bool = False) -> Path:
    """The path of a server binary built from the current sources: reused, or built now."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with _locked(cache / ".lock"):
        apt = PrivateApt(cache / "apt", SUITE)
        sources = source_hash()
        try:
            _refresh_index(apt, log, refresh)
            packages = apt.resolve(ROOT_PACKAGES, FOLLOW)
        except (AptError, BuildError) as exc:
            if (previous := _newest_build(cache, sources)) is None:
                raise BuildError(str(exc)) from exc
            log(f"no package index ({exc}); using the previous build {previous} of the same sources")
            return previous
        build = cache / f"build-{_digest([packages, sources])}"
        binary = build / "kube-apiserver"
        if binary.exists():
            log(f"reusing {binary} ({_describe(packages)}, sources {sources}) in {time.monotonic() - started:.1f} s")
            return binary
        try:
            _build(apt, packages, sources, build, log)
        except (AptError, BuildError, subprocess.SubprocessError, OSError) as exc:
            previous = _newest_build(cache, sources)
            if previous is None:
                raise BuildError(str(exc)) from exc
            log(f"BUILD FAILED ({exc}); using the previous build {previous} of the same sources")
            return previous
        log(f"built {binary} in {time.monotonic() - started:.0f} s")
        _prune(cache, keep=build, log=log)
        return binary


def _refresh_index(apt: PrivateApt, log: Log, refresh: bool) -> None:
    if not refresh and apt.index_age() < INDEX_MAX_AGE:
        return
    started = time.monotonic()
    try:
        apt.update()
    except AptError as exc:
        if apt.packages_file() is None:
            raise BuildError(f"cannot read Debian {SUITE}'s package index: {exc}") from exc
        log(f"could not refresh the {SUITE} index ({exc}); using the one from {apt.index_age() / 3600:.0f} h ago")
        return
    log(f"refreshed the Debian {SUITE} package index in {time.monotonic() - started:.1f} s")


def _build(apt: PrivateApt, packages: dict[str, str], sources: str, build: Path, log: Log) -> None:
    root = apt.home.parent / f"root-{_digest(packages)}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        megabytes = total_size(apt, packages) / 1e6
        started = time.monotonic()
        log(f"fetching {len(packages)} Debian {SUITE} packages ({megabytes:.0f} MB): {_describe(packages)}")
        fetch_and_unpack(apt, packages, root)
        (root / ".complete").touch()
        log(f"downloaded and unpacked into {root} in {time.monotonic() - started:.0f} s")
    shutil.rmtree(build, ignore_errors=True)
    package_dir = build / "gopath" / "src" / IMPORT_PATH
    (package_dir / "openapi").mkdir(parents=True)
    for path in SOURCE.glob("*.go"):
        shutil.copy2(path, package_dir / path.name)
    env = _go_env(root, build)
    started = time.monotonic()
    header = build / "header.txt"
    header.write_text("// Code generated by openapi-gen (tests/kube_build.py). DO NOT EDIT.\n")
    _run([str(root / "usr/bin/openapi-gen"), "--output-dir", str(package_dir / "openapi"),
          "--output-pkg", f"{IMPORT_PATH}/openapi", "--output-file", "zz_generated.openapi.go",
          "--report-filename", "/dev/null", "--go-header-file", str(header), *OPENAPI_PACKAGES],
         env, "openapi-gen")
    log(f"generated OpenAPI definitions in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    log("go build (offline, GOPATH mode; ~4 min when the Go cache is cold) ...")
    version = _kube_version(packages)
    ldflags = " ".join(["-s", "-w"] + [f"-X k8s.io/component-base/version.{name}={value}" for name, value in (
        ("gitVersion", f"v{version}"), ("gitMajor", version.split(".")[0]), ("gitMinor", version.split(".")[1]),
        ("gitTreeState", "clean"), ("buildDate", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))])
    partial = build / "kube-apiserver.partial"
    _run([env["GOROOT"] + "/bin/go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial), IMPORT_PATH],
         env, "go build", cwd=package_dir)
    manifest = {"packages": packages, "sources": sources, "kubernetes": version,
                "built": time.strftime("%Y-%m-%d %H:%M:%S"), "go_build_seconds": round(time.monotonic() - started)}
    (build / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(build / "gopath")
    partial.rename(build / "kube-apiserver")
    log(f"go build took {time.monotonic() - started:.0f} s")


def _go_env(root: Path, build: Path) -> dict[str, str]:
    goroots = sorted(root.glob("usr/lib/go-*/bin/go"))
    if not goroots:
        raise BuildError(f"no Go toolchain in {root}/usr/lib")
    goroot = goroots[-1].parent.parent
    return {
        **os.environ,
        "GOROOT": str(goroot), "PATH": f"{goroot}/bin:{os.environ.get('PATH', '')}",
        "GOPATH": f"{build / 'gopath'}:{root / 'usr/share/gocode'}",
        "GO111MODULE": "off", "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
        "GOFLAGS": "", "GOENV": "off", "GOTELEMETRY": "off", "GOCACHE": str(build.parent / "gocache"),
    }


def _run(args: list[str], env: dict[str, str], step: str, cwd: Path | None = None) -> None:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise BuildError(f"{step} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")


def _kube_version(packages: dict[str, str]) -> str:
    """``1.36.4`` from golang-k8s-apiserver-dev ``0.36.4-1`` (k8s.io libraries are 0.x of 1.x)."""
    match = re.match(r"(?:\d+:)?0\.(\d+)\.(\d+)", packages.get("golang-k8s-apiserver-dev", ""))
    return f"1.{match.group(1)}.{match.group(2)}" if match else "1.0.0"


def _describe(packages: dict[str, str]) -> str:
    shown = ("golang-go", "golang-k8s-apiextensions-apiserver-dev", "golang-k8s-apiserver-dev")
    return ", ".join(f"{name} {packages[name]}" for name in shown if name in packages)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _newest_build(cache: Path, sources: str) -> Path | None:
    """The most recent finished build of these sources, whatever its package versions."""
    builds = []
    for manifest in cache.glob("build-*/manifest.json"):
        binary = manifest.parent / "kube-apiserver"
        if binary.exists() and json.loads(manifest.read_text()).get("sources") == sources:
            builds.append((manifest.stat().st_mtime, binary))
    return max(builds)[1] if builds else None


def _prune(cache: Path, keep: Path, log: Log) -> None:
    """Keeps the new build and the one before (the fallback), and only the unpacked tree of
    the new one (a built binary does not need its tree)."""
    builds = sorted(cache.glob("build-*/manifest.json"), key=lambda m: m.stat().st_mtime, reverse=True)
    kept = {keep} | {m.parent for m in builds[:2]}
    for build in cache.glob("build-*"):
        if build not in kept:
            shutil.rmtree(build, ignore_errors=True)
    used = f"root-{_digest(json.loads((keep / 'manifest.json').read_text())['packages'])}"
    for root in cache.glob("root-*"):
        if root.name != used:
            log(f"removing {root} (the new build does not use it)")
            shutil.rmtree(root, ignore_errors=True)


def ensure_tool(command: str, package: str, log: Log = _log) -> str:
    """``command`` from PATH, or else from Debian sid's ``package``, unpacked into the
    cache (for a machine without it and without root: kubectl, etcd)."""
    if found := shutil.which(command):
        return found
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        apt = PrivateApt(cache / "apt", SUITE)
        _refresh_index(apt, log, refresh=False)
        packages = apt.resolve([package], re.compile(r"^$"))
        tool = cache / "tools" / f"{package}-{packages[package]}"
        binary = tool / "usr" / "bin" / command
        if not binary.exists():
            log(f"{command} is not installed: fetching Debian {SUITE}'s {package} {packages[package]}")
            fetch_and_unpack(apt, packages, tool)
        return str(binary)


@contextmanager
def _locked(path: Path):
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refresh", action="store_true", help="refresh the Debian package index first")
    args = parser.parse_args(argv)
    try:
        print(ensure_server(refresh=args.refresh))
    except (BuildError, AptError) as exc:
        _log(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
