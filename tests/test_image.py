"""The container image, as built here from Debian packages by deploy/image/build.py (no
registry is reachable, so deploy/image/Containerfile cannot be built; it is checked to
describe the same image).

The image is built once per inputs and cached outside the repository
(~/.cache/mt5fleet/image): about 1-1.5 min cold on 2 cores, about 5 s when reused (the
wheel is rebuilt to hash its content). Its root filesystem (``umoci unpack``) is run the way
a container runtime would run it with the chart's pod security: the OCI config's user
(10001), environment and entry point, in a private mount namespace where the root is a
read-only bind mount, with /proc, /dev and a writable /tmp (the chart's emptyDir); the
network is the host's, so a worker reaches a nats-server on loopback. Needs root.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

import nats
import pytest

REPO = Path(__file__).resolve().parents[1]
CONTAINERFILE = REPO / "deploy" / "image" / "Containerfile"
OCI_LABELS = ("title", "description", "source", "licenses", "version", "revision")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # 900 s: a cold build, with margin

# Run in a private mount namespace, so nothing stays mounted if the test dies: the rootfs
# bound read-only onto itself, then /proc, the host's /dev and a writable /tmp on it.
SANDBOX = r"""set -eu
root=$1 tmp=$2 userspec=$3 workdir=$4; shift 4
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind "$tmp" "$root/tmp"
exec chroot --userspec="$userspec" "$root" /usr/bin/env --chdir="$workdir" "$@"
"""


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mt5fleet_image_build", REPO / "deploy" / "image" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_build()


@dataclass(frozen=True)
class Sandbox:
    """The unpacked image, run as its OCI config says."""

    rootfs: Path
    tmp: Path
    config: dict

    def command(self, *args: str, user: str | None = None, entrypoint: list[str] | None = None) -> list[str]:
        config = self.config["config"]
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", SANDBOX, "sandbox",
                str(self.rootfs), str(self.tmp), user or config["User"], config.get("WorkingDir") or "/",
                *(entrypoint or config["Entrypoint"]), *args]

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config["config"]["Env"])

    def run(self, *args: str, user: str | None = None,
            entrypoint: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args, user=user, entrypoint=entrypoint), env=self.env,
                              capture_output=True, text=True, timeout=60)

    def start(self, *args: str) -> subprocess.Popen[str]:
        # unshare, sh, chroot and env each exec the next: the pid is mt5fleet's, SIGTERM reaches it.
        return subprocess.Popen(self.command(*args), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def image():
    if os.geteuid() != 0:
        pytest.skip("building and running the image needs root (mmdebstrap, mount, chroot)")
    try:
        return build.build(log=lambda message: print(f"[image] {message}", flush=True))
    except build.ImageError as error:
        pytest.fail(f"the image could not be built: {error}")


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` (tmp excluded) with its size, mode and modification time."""
    tree = {}
    for directory, dirs, files in os.walk(root):
        if Path(directory) == root:
            dirs[:] = [name for name in dirs if name != "tmp"]
        for name in [*dirs, *files]:
            info = os.lstat(os.path.join(directory, name))
            tree[os.path.join(directory, name)] = (info.st_size, info.st_mode, info.st_mtime_ns)
    return tree


@pytest.fixture(scope="module")
def sandbox(image, tmp_path_factory) -> Iterator[Sandbox]:
    tmp = tmp_path_factory.mktemp("image-tmp")
    tmp.chmod(0o1777)
    before = _tree(image.rootfs)
    yield Sandbox(rootfs=image.rootfs, tmp=tmp, config=image.config)
    assert _tree(image.rootfs) == before, "something was written into the image's root filesystem"


# ------------------------------------------------------------------ the image as built

def test_the_oci_config_runs_mt5fleet_as_a_non_root_user_with_the_oci_labels(image):
    config = image.config["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["mt5fleet"]
    assert "/opt/mt5fleet/bin" in dict(item.split("=", 1) for item in config["Env"])["PATH"].split(":")
    labels = config["Labels"]
    assert {f"org.opencontainers.image.{name}" for name in OCI_LABELS} <= set(labels)
    assert labels["org.opencontainers.image.version"] == metadata.version("mt5fleet") == image.tag
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.digest)
    print(f"\n{image.reference} {image.digest}: {image.compressed_bytes / 1e6:.1f} MB compressed, "
          f"{image.unpacked_bytes / 1e6:.1f} MB unpacked, {'reused' if image.reused else 'built'} in {image.seconds} s")


def test_the_root_filesystem_holds_python_and_the_wheel_only(image):
    root = image.rootfs
    assert "mt5fleet:x:10001:10001:" in (root / "etc/passwd").read_text()
    assert (root / "opt/mt5fleet/bin/mt5fleet").is_file()
    assert not list((root / "opt/mt5fleet/bin").glob("pip*")), "pip stayed in the venv"
    site = root / "opt/mt5fleet/lib/python3.11/site-packages"
    assert list(site.glob("mt5fleet-*.dist-info")) and list(site.glob("kopf-*.dist-info"))
    assert not list(site.glob("rich-*.dist-info")), "the demo's extras are not for the cluster"
    packages = dict(line.split(" ", 1) for line in image.packages.read_text().splitlines())
    assert "python3" in packages and "apt" not in packages
    assert not list((root / "usr/share/man").glob("*/*"))


# ------------------------------------------------------------------ the image, run

def test_version_and_operator_help_run_as_uid_10001(sandbox):
    version = sandbox.run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"mt5fleet {metadata.version('mt5fleet')}"
    helped = sandbox.run("operator", "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: mt5fleet operator") and "--local DIR" in helped.stdout
    whoami = sandbox.run("-u", entrypoint=["/usr/bin/id"])
    assert whoami.stdout.strip() == "10001", whoami.stderr


IMPORT_ALL = """
import importlib, importlib.metadata as md, json
names = sorted(n for n in md.packages_distributions() if n.isidentifier() and not n.startswith("_"))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed[name] = f"{type(error).__name__}: {error}"
print(json.dumps({"imported": len(names) - len(failed), "failed": failed}))
"""


def test_every_installed_package_imports_and_every_extension_finds_its_libraries(sandbox):
    """A wheel's extension may need a Debian library the essential set lacks (google-re2
    needed libstdc++6): every top-level module of the venv is imported, every .so resolved."""
    imported = sandbox.run("-c", IMPORT_ALL, entrypoint=["python"])
    assert imported.returncode == 0, imported.stderr
    result = json.loads(imported.stdout)
    assert result["failed"] == {} and result["imported"] > 20, result
    ldd = sandbox.run("-c", "find /opt/mt5fleet -name '*.so*' -type f -exec ldd {} + | grep 'not found' || true",
                      entrypoint=["/bin/sh"])
    assert ldd.returncode == 0 and ldd.stdout == "", ldd.stdout + ldd.stderr


def test_the_root_filesystem_is_read_only_and_tmp_writable(sandbox):
    probe = ["/bin/sh", "-c", "touch /tmp/probe && rm /tmp/probe && touch /opt/mt5fleet/probe"]
    as_user = sandbox.run(entrypoint=probe)
    assert as_user.returncode != 0 and "/opt/mt5fleet/probe" in as_user.stderr, as_user.stderr
    as_root = sandbox.run(entrypoint=probe, user="0:0")  # root could write, but the mount is read-only
    assert "Read-only file system" in as_root.stderr, as_root.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def _until_ready(process: subprocess.Popen[str], port: int, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, process.communicate()[0]
        try:
            status, body = _readyz(port)
            if status == 200:
                return body
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"not ready within {timeout_s} s"
        await asyncio.sleep(0.1)


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"did not stop within 15 s of SIGTERM:\n{output}") from None
    assert process.returncode == 0, output
    return output


WORKERS = {
    "health": (),  # the fleet-health exporter
    "marketdata": ("--feed", "simulated", "--symbols", "EURUSD"),
}


@pytest.mark.parametrize("kind", sorted(WORKERS))
async def test_a_worker_in_the_image_becomes_ready_against_nats_on_loopback_and_stops(sandbox, fresh_nats_server,
                                                                                        kind):
    client = await nats.connect(fresh_nats_server.url)
    ticks = await client.subscribe("md.>")
    port = _free_port()
    process = sandbox.start("worker", kind, "--server", fresh_nats_server.url, "--http-host", "127.0.0.1",
                            "--http-port", str(port), *WORKERS[kind])
    try:
        assert await _until_ready(process, port) == {"ready": True, "nats": True, "failing": {}}
        if kind == "marketdata":
            tick = await ticks.next_msg(timeout=15)
            assert tick.subject == "md.EURUSD"
    finally:
        if process.poll() is None:
            output = _stop(process)
        else:
            output = process.communicate()[0]
        await client.close()
    assert f"{kind} worker running" in output and f"stopping the {kind} worker" in output, output
    assert "Read-only file system" not in output and "Traceback" not in output, output


# ------------------------------------------------------------------ the Containerfile

def test_the_containerfile_describes_the_same_image():
    text = CONTAINERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS build$", text, re.M)
    assert "ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm" in text
    assert 'ENTRYPOINT ["mt5fleet"]' in final and "USER 10001:10001" in final
    assert "useradd --system --uid 10001" in final and "COPY --from=build /opt/mt5fleet /opt/mt5fleet" in final
    for name in OCI_LABELS:
        assert f"org.opencontainers.image.{name}=" in final
    assert f"ARG VERSION={metadata.version('mt5fleet')}" in final
    assert f"[{build.EXTRAS}]" in text
    for env in ("PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "PATH=/opt/mt5fleet/bin:"):
        assert env in final
