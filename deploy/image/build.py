"""Builds mt5fleet's container image from Debian packages, without docker or a registry.

    .venv/bin/python deploy/image/build.py            # build, or reuse the cached image
    .venv/bin/python deploy/image/build.py --refresh  # rebuild the Debian base too (security updates)

The same image as ``deploy/image/Containerfile`` (Python 3.11 and the project's wheel in a
venv, user 10001, ``mt5fleet`` as the entry point, OCI labels), made from bookworm's own
packages so it can be built and tested on a machine that cannot pull ``python:3.11-slim``.
Needs root (mmdebstrap in root mode, chroot) and Debian's mmdebstrap, umoci and skopeo
(installed with apt-get when missing). Two layers, each cached:

1. the Debian base: ``mmdebstrap --variant=essential --include=python3,python3-venv,
   ca-certificates,libstdc++6 bookworm`` without documentation, manuals and translations
   (licences kept); reused while the package list and the options below are unchanged;
2. the application: ``/opt/mt5fleet``, a venv made in a chroot of the base by the base's own
   Python, with the project's wheel and its dependencies (wheels fetched from PyPI on the
   host, installed offline by pip run from Debian's pip wheel, so no pip stays in the venv),
   and the user 10001 in ``/etc/passwd``; reused while the wheel's content is unchanged.

``umoci`` assembles the OCI layout and writes the config, ``skopeo inspect`` reads it back,
and ``umoci unpack`` gives the root filesystem the tests run. Only the config (the revision
label) is redone when just the git commit moved. Cache: ``$MT5FLEET_IMAGE_CACHE``, else
``${XDG_CACHE_HOME:-~/.cache}/mt5fleet/image``.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
VARIANT = "essential"
# libstdc++6: google-re2's extension (the operator's CEL and pattern checks) links it; the
# essential set has none (python:3.11-slim gets it through apt).
INCLUDE = ("python3", "python3-venv", "ca-certificates", "libstdc++6")
# What no container needs: documentation (licences excepted), manuals, translations.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*", "path-exclude=/usr/share/locale/*",
)
CLEANUP_HOOK = 'rm -rf "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old'
TOOLS = {"mmdebstrap": "mmdebstrap", "umoci": "umoci", "skopeo": "skopeo"}
EXTRAS = "operator,worker"  # the agent runs on the trader's Windows VPS, not in the cluster
VENV = "/opt/mt5fleet"
UID = GID = 10001
USER = "mt5fleet"
PASSWD_LINE = f"{USER}:x:{UID}:{GID}:mt5fleet:/nonexistent:/usr/sbin/nologin\n"
GROUP_LINE = f"{USER}:x:{GID}:\n"
APP_PATHS = ("./etc/group", "./etc/passwd", f".{VENV}")
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",  # the root filesystem is read-only; the .pyc files are built
    "PYTHONUNBUFFERED": "1",
    "HOME": "/tmp",  # the only writable place (an emptyDir in the chart)
}
ENTRYPOINT = "mt5fleet"
SOURCE_URL = os.environ.get("MT5FLEET_IMAGE_SOURCE", "https://github.com/mt5fleet/mt5fleet")
# Bump when a step changes what it produces without changing its inputs.
FORMAT = "1"
KEEP = 2  # cached builds kept of each kind

Log = Callable[[str], None]


class ImageError(RuntimeError):
    """The image could not be built; the message names the step and the command."""


@dataclass(frozen=True)
class Image:
    oci: Path            # the OCI layout directory
    tag: str
    digest: str          # the manifest's digest, as a registry would name it
    compressed_bytes: int
    unpacked_bytes: int
    rootfs: Path         # `umoci unpack` of the image
    config: dict         # the image config (skopeo inspect --config)
    packages: Path       # the Debian packages of the base, `name version` per line
    reused: bool
    seconds: float

    @property
    def reference(self) -> str:
        return f"oci:{self.oci}:{self.tag}"


def cache_dir() -> Path:
    explicit = os.environ.get("MT5FLEET_IMAGE_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mt5fleet" / "image"


_STARTED = time.monotonic()


def _log(message: str) -> None:
    print(f"[image {time.monotonic() - _STARTED:5.1f}s] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], step: str, **kwargs: object) -> str:
    result = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ImageError(f"{step}: `{' '.join(args)}` exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ tools and inputs

def ensure_tools(log: Log) -> None:
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if os.geteuid() != 0:
        raise ImageError("the Debian-package build needs root (mmdebstrap in root mode, chroot)")
    if missing:
        log(f"installing {', '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], "apt-get install", env=env)


def _source_files(repo: Path) -> list[str]:
    """The working tree as git sees it (tracked and new files, ignored ones left out)."""
    out = _run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
               "listing the sources")
    return [name for name in out.split("\0") if name and (repo / name).is_file()]


def build_wheel(repo: Path, out: Path) -> Path:
    """``pip wheel`` of a copy of the working tree, so the build writes nothing into the repo."""
    source = out / "src"
    for name in _source_files(repo):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, source / name)
    # The venv's own setuptools when it has one (offline); else pip fetches it from PyPI.
    isolation = ["--no-build-isolation"] if _has_setuptools() else []
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation,
          "--wheel-dir", str(out / "dist"), str(source)], "building the wheel")
    wheels = sorted((out / "dist").glob("mt5fleet-*.whl"))
    if len(wheels) != 1:
        raise ImageError(f"building the wheel: expected one mt5fleet wheel, found {wheels}")
    return wheels[0]


def _has_setuptools() -> bool:
    check = "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"
    return subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0


def wheel_content_hash(wheel: Path) -> str:
    """The hash of what the wheel holds (names and bytes), not of the zip with its timestamps."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()[:16]


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def revision(repo: Path) -> str:
    result = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def labels(version: str, commit: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "mt5fleet",
        "org.opencontainers.image.description": "mt5fleet server components: operator, workers (adjust, "
        "marketdata, feedback, catchup) and the fleet-health exporter; `mt5fleet` picks the component",
        "org.opencontainers.image.source": SOURCE_URL,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.base.name": f"debian:{SUITE} (mmdebstrap --variant={VARIANT})",
    }


# ------------------------------------------------------------------ layer 1: the Debian base

def base_key() -> str:
    return _digest(FORMAT, SUITE, VARIANT, *INCLUDE, *DPKG_OPTIONS, CLEANUP_HOOK)


def build_base(target: Path, log: Log) -> None:
    """``rootfs.tar`` and ``packages.txt`` (the resolved package list) into ``target``."""
    work = Path(tempfile.mkdtemp(prefix="base-", dir=target.parent))
    log(f"mmdebstrap --variant={VARIANT} --include={','.join(INCLUDE)} {SUITE}")
    options = [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    _run(["mmdebstrap", "--quiet", "--mode=root", f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}",
          *options, f"--customize-hook={CLEANUP_HOOK}",
          f"--customize-hook=chroot \"$1\" dpkg-query -W -f '${{Package}} ${{Version}}\\n' > {work}/packages.txt",
          SUITE, str(work / "rootfs.tar")], "mmdebstrap")
    work.rename(target)


# ------------------------------------------------------------------ layer 2: the application

def fetch_wheelhouse(wheel: Path, out: Path, log: Log) -> None:
    """The wheel and every dependency as wheels, from PyPI (pip's cache), for an offline install."""
    log(f"pip wheel {wheel.name}[{EXTRAS}] and its dependencies")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--prefer-binary", "--wheel-dir", str(out),
          f"{wheel}[{EXTRAS}]"], "fetching the dependencies")


def build_app_layer(base_tar: Path, wheelhouse: Path, wheel: Path, out_tar: Path, log: Log) -> None:
    with tempfile.TemporaryDirectory(prefix="root-", dir=out_tar.parent) as tmp:
        root = Path(tmp)
        _run(["tar", "--extract", "--numeric-owner", "--same-permissions", "--file", str(base_tar),
              "--directory", str(root)], "unpacking the base")
        install_venv(root, wheelhouse, wheel, log)
        add_user(root)
        _run(["tar", "--create", "--file", str(out_tar), "--directory", str(root), "--numeric-owner",
              "--sort=name", "--pax-option=delete=atime,delete=ctime", *APP_PATHS], "writing the app layer")


def _chroot(root: Path, *args: str) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    return _run(["chroot", str(root), *args], f"in the chroot: {args[0]}", env=env)


def install_venv(root: Path, wheelhouse: Path, wheel: Path, log: Log) -> None:
    """The venv made and filled by the base's own Python; pip runs from Debian's pip wheel
    (python3-pip-whl), offline, so the venv holds no pip."""
    shutil.copytree(wheelhouse, root / "tmp" / "wheels")
    pips = sorted(glob.glob(str(root / "usr/share/python-wheels/pip-*.whl")))
    if not pips:
        raise ImageError("the base has no pip wheel in /usr/share/python-wheels (python3-venv missing?)")
    pip = "/" + str(Path(pips[-1]).relative_to(root)) + "/pip"
    log(f"venv {VENV} in the chroot; pip install {wheel.name}[{EXTRAS}] offline")
    _chroot(root, "python3", "-m", "venv", "--without-pip", VENV)
    _chroot(root, f"{VENV}/bin/python", pip, "install", "--quiet", "--no-index", "--find-links", "/tmp/wheels",
            "--no-warn-script-location", f"/tmp/wheels/{wheel.name}[{EXTRAS}]")
    _chroot(root, f"{VENV}/bin/mt5fleet", "--version")


def add_user(root: Path) -> None:
    """The non-root user, written directly: `passwd` (useradd) is not in the essential set."""
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write(PASSWD_LINE)
    with (root / "etc/group").open("a") as group:
        group.write(GROUP_LINE)


# ------------------------------------------------------------------ the OCI layout

def assemble(oci: Path, tag: str, layers: list[Path], log: Log) -> None:
    log(f"umoci: OCI layout {oci} with {len(layers)} layers")
    image = f"{oci}:{tag}"
    _run(["umoci", "init", "--layout", str(oci)], "umoci init")
    _run(["umoci", "new", "--image", image], "umoci new")
    for layer in layers:
        _run(["umoci", "raw", "add-layer", "--image", image, "--history.created_by", f"deploy/image/build.py: "
              f"{layer.name}", str(layer)], f"umoci raw add-layer {layer.name}")


def configure(oci: Path, tag: str, wanted: dict[str, str]) -> None:
    args = ["umoci", "config", "--image", f"{oci}:{tag}", "--os", "linux", "--architecture", "amd64",
            "--author", "mt5fleet deploy/image/build.py", "--config.user", f"{UID}:{GID}",
            "--config.entrypoint", ENTRYPOINT, "--config.cmd", "--help", "--config.workingdir", "/tmp",
            "--clear=config.labels", "--clear=config.env", "--history.created_by", "umoci config"]
    args += [option for name, value in ENV.items() for option in ("--config.env", f"{name}={value}")]
    args += [option for name, value in wanted.items() for option in ("--config.label", f"{name}={value}")]
    _run(args, "umoci config")
    _run(["umoci", "gc", "--layout", str(oci)], "umoci gc")


def inspect(oci: Path, tag: str) -> tuple[dict, dict, dict]:
    """(skopeo inspect, the manifest, the image config) of the image, as skopeo reads them."""
    reference = f"oci:{oci}:{tag}"
    summary = json.loads(_run(["skopeo", "inspect", reference], "skopeo inspect"))
    manifest = json.loads(_run(["skopeo", "inspect", "--raw", reference], "skopeo inspect --raw"))
    config = json.loads(_run(["skopeo", "inspect", "--config", reference], "skopeo inspect --config"))
    return summary, manifest, config


def unpack(oci: Path, tag: str, bundle: Path) -> None:
    _run(["umoci", "unpack", "--image", f"{oci}:{tag}", str(bundle)], "umoci unpack")


def _tree_bytes(path: Path) -> int:
    return int(_run(["du", "--summarize", "--bytes", str(path)], "du").split()[0])


# ------------------------------------------------------------------ the whole build

def build(repo: Path = REPO, cache: Path | None = None, log: Log = _log, refresh: bool = False) -> Image:
    started = time.monotonic()
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    ensure_tools(log)
    with _locked(cache / ".lock"), tempfile.TemporaryDirectory(prefix="wheel-", dir=cache) as tmp:
        wheel = build_wheel(repo, Path(tmp))
        base = _cached_base(cache, refresh, log)
        key = _digest(FORMAT, base.name, wheel_content_hash(wheel), Path(__file__).read_text())
        image_dir = cache / f"image-{key}"
        reused = image_dir.is_dir()
        if not reused:
            _build_image(image_dir, base, wheel, log)
        tag, wanted = wheel_version(wheel), labels(wheel_version(wheel), revision(repo))
        summary, manifest, config = inspect(image_dir / "oci", tag)
        if config.get("config", {}).get("Labels") != wanted:
            configure(image_dir / "oci", tag, wanted)
            summary, manifest, config = inspect(image_dir / "oci", tag)
        os.utime(image_dir)
        os.utime(base)
        _prune(cache, "image-", image_dir)
        _prune(cache, "base-", base)
    return Image(oci=image_dir / "oci", tag=tag, digest=summary["Digest"],
                 compressed_bytes=manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"]),
                 unpacked_bytes=int((image_dir / "unpacked-bytes").read_text()), rootfs=image_dir / "bundle" / "rootfs",
                 config=config, packages=base / "packages.txt", reused=reused,
                 seconds=round(time.monotonic() - started, 1))


def _cached_base(cache: Path, refresh: bool, log: Log) -> Path:
    base = cache / f"base-{base_key()}"
    if refresh and base.is_dir():
        shutil.rmtree(base)
    if not base.is_dir():
        build_base(base, log)
    else:
        log(f"reusing the Debian base {base.name}")
    return base


def _build_image(image_dir: Path, base: Path, wheel: Path, log: Log) -> None:
    work = Path(tempfile.mkdtemp(prefix="building-", dir=image_dir.parent))
    try:
        fetch_wheelhouse(wheel, work / "wheels", log)
        build_app_layer(base / "rootfs.tar", work / "wheels", wheel, work / "app.tar", log)
        tag = wheel_version(wheel)
        assemble(work / "oci", tag, [base / "rootfs.tar", work / "app.tar"], log)
        configure(work / "oci", tag, labels(tag, "unknown"))
        log("umoci unpack (the root filesystem the tests run)")
        unpack(work / "oci", tag, work / "bundle")
        (work / "unpacked-bytes").write_text(str(_tree_bytes(work / "bundle" / "rootfs")))
        shutil.rmtree(work / "wheels")
        (work / "app.tar").unlink()
        work.rename(image_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _prune(cache: Path, prefix: str, keep: Path) -> None:
    """Older builds beyond the last ``KEEP`` go (and any half-done one left by a crash)."""
    for stale in cache.glob("building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    entries = sorted(cache.glob(f"{prefix}*"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in [entry for entry in entries if entry != keep][KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refresh", action="store_true", help="rebuild the Debian base (newer packages)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        image = build(refresh=args.refresh)
    except ImageError as error:
        _log(f"failed: {error}")
        return 1
    if args.json:
        print(json.dumps({**asdict(image), "reference": image.reference}, default=str, indent=2))
    else:
        print(f"{image.reference}\ndigest {image.digest}\nsize {image.compressed_bytes / 1e6:.1f} MB compressed, "
              f"{image.unpacked_bytes / 1e6:.1f} MB unpacked\n{'reused' if image.reused else 'built'} in "
              f"{image.seconds} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
