"""``mt5fleet agent bundle | init | doctor``: hand an agent over to a trader and let them
check it. ``bundle`` runs on the platform's side and reads what the operator issued (the
bootstrap Secret ``mt5fleet-agent-<user>``: from the local operator's ``--state`` folder or
from the cluster); ``init`` and ``doctor`` run on the trader's VPS. The composition root:
the only place that knows both the operator's secret stores and the agent."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

PASSPHRASE_ENV = "MT5FLEET_BUNDLE_PASSPHRASE"


def add_handover(actions: argparse._SubParsersAction) -> None:
    bundle = actions.add_parser("bundle", help="platform side: write one file with what an agent needs for a user")
    bundle.add_argument("--user", required=True, help="the TradingClient's user id")
    source = bundle.add_mutually_exclusive_group(required=True)
    source.add_argument("--state", type=Path, help="local mode: the operator's --state folder (default there: "
                        "DIR/.mt5fleet of `operator --local DIR`)")
    source.add_argument("--namespace", help="cluster: the namespace of the user's TradingClient")
    bundle.add_argument("--kubeconfig", type=Path, help="cluster: kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    bundle.add_argument("--out", type=Path, help="bundle file (default: mt5fleet-agent-USER.zip)")
    bundle.add_argument("--mt5-login", type=int, help="prefill mt5.login in agent.toml")
    bundle.add_argument("--mt5-server", default="", help="prefill mt5.server in agent.toml")
    bundle.add_argument("--with-agent-key", action="store_true",
                        help=f"include the MT5-password key, sealed under a passphrase from ${PASSPHRASE_ENV} "
                        "(or asked for); send the passphrase by another channel")
    init = actions.add_parser("init", help="VPS side: unpack a bundle (0700 folder, 0600 files)")
    init.add_argument("bundle_file", type=Path, metavar="BUNDLE")
    init.add_argument("--dir", type=Path, help="where to (default: C:\\mt5fleet on Windows, ~/mt5fleet elsewhere)")
    init.add_argument("--force", action="store_true", help="replace files already there")
    check = actions.add_parser("doctor", help="check the terminal, symbols, NATS, credentials, clock and outbox")
    # SUPPRESS: `mt5fleet agent --config FILE doctor` works too (a default would overwrite it).
    check.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="agent TOML config file")


def run_handover(args: argparse.Namespace) -> int | None:
    """The exit code, or None when the action is not one of these."""
    if args.agent_command == "bundle":
        return bundle(args)
    if args.agent_command == "init":
        return init(args)
    if args.agent_command == "doctor":
        return doctor(args)
    return None


def _passphrase(prompt: str) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


async def _secret(args: argparse.Namespace, name: str) -> dict[str, bytes] | None:
    if args.state is not None:
        from mt5fleet.operator.adapters.secret_store import DirectorySecretStore

        folder = args.state / "secrets" if (args.state / "secrets").is_dir() else args.state
        return await DirectorySecretStore(folder).get(name)
    import kubernetes

    from mt5fleet.operator.adapters import kube_config
    from mt5fleet.operator.adapters.secret_store import KubernetesSecretStore

    access = kube_config.load(args.kubeconfig)
    api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(access.configuration))
    try:
        return await KubernetesSecretStore(api, args.namespace).get(name)
    except kubernetes.client.ApiException as exc:
        raise _api_refusal(exc, name, args.namespace) from None


def _api_refusal(exc: Exception, name: str, namespace: str) -> Exception:
    """The API server's refusal in one line: its exception's text is the whole HTTP
    response, headers and all."""
    from mt5fleet.client.core.bundle import BundleError

    status = getattr(exc, "status", None)
    if status == 403:
        return BundleError(f"not allowed to read Secret {name} in namespace {namespace} (HTTP 403): the kubeconfig's "
                           f"user needs `get` on it, e.g. kubectl create role mt5fleet-handover -n {namespace} "
                           f"--verb=get --resource=secrets --resource-name={name}, bound to that user")
    if status == 401:
        return BundleError("the API server refused the kubeconfig's credentials (HTTP 401): log in again")
    reason = getattr(exc, "reason", "")
    return BundleError(f"reading Secret {name} in namespace {namespace} failed: HTTP {status} {reason}")


def bundle(args: argparse.Namespace) -> int:
    from mt5fleet.client.adapters import bundle_file
    from mt5fleet.client.core import bundle as core
    from mt5fleet.operator.adapters.appliers import bootstrap_secret_name

    name = bootstrap_secret_name(args.user)
    data = asyncio.run(_secret(args, name))
    if data is None:
        where = args.state or f"namespace {args.namespace}"
        raise core.BundleError(f"no Secret {name} in {where}: is there a TradingClient for {args.user!r} and has "
                               "the operator reconciled it?")
    issued = core.issued_from_secret(data, args.user)
    sealed = b""
    if args.with_agent_key:
        if not issued.agent_key:
            raise core.BundleError(f"Secret {name} holds no agent.key")
        sealed = bundle_file.seal_key(issued.agent_key, _passphrase("passphrase for the agent key: "), args.user)
    out = args.out or Path(f"mt5fleet-agent-{args.user}.zip")
    bundle_file.write_bundle(out, core.bundle_files(issued, sealed_key=sealed, login=args.mt5_login,
                                                    server=args.mt5_server))
    print(f"wrote {out} for {args.user}: user.creds{', ca.crt' if issued.ca else ''}, agent.toml"
          f"{', agent.key (sealed)' if sealed else ''}")
    print(f"hand it over by a secure channel; on the VPS: mt5fleet agent init {out.name}")
    return 0


def _default_dir() -> Path:
    return Path("C:/mt5fleet") if os.name == "nt" else Path.home() / "mt5fleet"


def init(args: argparse.Namespace) -> int:
    from mt5fleet.client.adapters import bundle_file
    from mt5fleet.client.core import bundle as core

    files = bundle_file.read_bundle(args.bundle_file)
    user_id = core.check_manifest(files)
    files.pop(core.MANIFEST)
    sealed = files.pop(core.SEALED_KEY, None)
    if sealed is not None:
        files[core.KEY] = bundle_file.open_key(sealed, _passphrase("passphrase for the agent key: "), user_id)
    folder = args.dir or _default_dir()
    bundle_file.unpack(files, folder, force=args.force)
    config = folder / core.CONFIG
    print(f"unpacked the agent of {user_id} into {folder} (folder 0700, files 0600): {', '.join(sorted(files))}")
    print(f"next: edit {config} if needed (mt5.login, [risk]), then\n  mt5fleet agent --config {config} doctor\n"
          f"  mt5fleet agent --config {config}")
    return 0


def doctor(args: argparse.Namespace) -> int:
    from mt5fleet.client.adapters.config_file import load_settings
    from mt5fleet.client.app.doctor import examine
    from mt5fleet.launcher.agent import build_clock, build_terminal_api

    if args.config is None:
        raise ValueError("mt5fleet agent doctor needs the config: mt5fleet agent --config agent.toml doctor")
    settings = load_settings(str(args.config))
    api = build_terminal_api(settings, build_clock(settings))
    findings = asyncio.run(examine(settings, api))
    for finding in findings:
        print(finding.line())
    bad = [f for f in findings if not f.ok]
    verdict = ": fix the lines marked FIX" if bad else ""
    print(f"\n{len(findings) - len(bad)} of {len(findings)} checks passed{verdict}")
    return 1 if bad else 0
