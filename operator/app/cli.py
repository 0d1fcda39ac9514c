"""``mt5fleet operator`` and ``mt5fleet nats trust-chain``: argument parsing only; the
heavy imports (kopf, kubernetes) happen when a command runs, so the agent's install
(without them) still shows ``mt5fleet --help``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path


def add_operator(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "operator", help="reconcile TradingClients: in a cluster (kopf) or over a folder (--local)",
        description="Without --local: the kopf operator in its namespace, in a pod (in-cluster config) or "
        "outside one (--kubeconfig, $KUBECONFIG); of several replicas only the Lease holder reconciles.")
    parser.add_argument("--local", type=Path, metavar="DIR", help="reconcile TradingClient YAML files in DIR")
    parser.add_argument("--state", type=Path, help="local mode: where secrets and account state go "
                        "(default: DIR/.mt5fleet)")
    parser.add_argument("--nats", "--server", dest="nats", action="append", metavar="URL",
                        help="NATS URL of the service connection; repeat for failover")
    parser.add_argument("--creds", help="the service user's credentials file")
    parser.add_argument("--tls-ca", help="CA bundle that signed the NATS server certificate")
    parser.add_argument("--trust", type=Path, help="trust chain JSON (mt5fleet nats trust-chain)")
    parser.add_argument("--tiers", type=Path, help="YAML of tier overrides ({tiers: {pro: {maxTradingPairs: 6}}})")
    parser.add_argument("--brokers", type=Path, help="YAML of the approved brokers ({approvedBrokers: {companies: "
                        "[IC Markets], servers: ['ICMarketsSC-*']}}); default: every broker")
    parser.add_argument("--agent-nats", action="append", default=[], metavar="URL",
                        help="NATS URL written into agents' bootstrap Secrets (default: --nats)")
    parser.add_argument("--agent-ca", type=Path, help="CA written into agents' bootstrap Secrets")
    parser.add_argument("--jetstream-config", type=Path, help="the TOML given to `mt5fleet nats bootstrap --config` "
                        "(a stream deleted behind the operator's back is recreated as bootstrap made it)")
    parser.add_argument("--replicas", type=int, help="the --replicas given to `mt5fleet nats bootstrap`")
    parser.add_argument("--http-port", type=int, default=8080, help="port of /metrics, /healthz, /readyz")
    parser.add_argument("--namespace", help="cluster mode: namespace to watch (default: $POD_NAMESPACE)")
    parser.add_argument("--worker-deployment", default="", help="cluster mode: adjustment-worker Deployment to scale")
    parser.add_argument("--users-per-worker", type=int, default=2000, metavar="N",
                        help="users one adjustment worker serves: the pool is sized from it (default 2000)")
    parser.add_argument("--resync", type=float, default=60.0, metavar="S",
                        help="cluster mode: seconds between drift repairs of each TradingClient (default 60)")
    parser.add_argument("--kubeconfig", type=Path, help="cluster mode outside a pod: kubeconfig to use "
                        "(default: in-cluster config in a pod, else $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--lease", default="mt5fleet-operator", help="cluster mode: the coordination.k8s.io "
                        "Lease of the leader election (only its holder reconciles)")
    parser.add_argument("--lease-duration", type=float, default=15.0, metavar="S",
                        help="seconds a silent leader keeps the Lease (default 15)")
    parser.add_argument("--lease-renew", type=float, default=5.0, metavar="S",
                        help="seconds between renewals and followers' looks (default 5)")
    parser.add_argument("--no-leader-election", action="store_true",
                        help="cluster mode with exactly one replica: run without a Lease")
    parser.add_argument("--crd", action="store_true", help="print the TradingClient CRD YAML and exit")
    parser.set_defaults(handler=run_operator)


def add_trust_chain(nats_commands: argparse._SubParsersAction) -> None:
    parser = nats_commands.add_parser(
        "trust-chain", help="create NATS JWT keys: operator, system, app and signal producer accounts, "
        "service, system and signals users")
    parser.add_argument("--out", type=Path, required=True, help="trust chain JSON to create (secret; 0600)")
    parser.add_argument("--server-config", type=Path, help="also write the nats-server config lines for it")
    parser.add_argument("--creds-dir", type=Path, help="also write service.creds (operator, bootstrap), "
                        "worker.creds (the workers: no stream purge or delete, no config writes), "
                        "system.creds (account JWT pushes) and signals.creds (the signal engine: publishes "
                        "signals.> from its own account, inbox _INBOX_signals) there, 0600")
    parser.set_defaults(handler=run_trust_chain)
    add_rotate_operator_key(nats_commands)


def add_rotate_operator_key(nats_commands: argparse._SubParsersAction) -> None:
    parser = nats_commands.add_parser(
        "rotate-operator-key", help="rotate the operator signing key of a trust chain, in two phases",
        description="Phase 1 (default): a new operator signing key; the operator JWT trusts the new and the "
        "previous key. Reload the servers with --server-config's lines, restart the operator (it re-signs the "
        "platform, producer and, within a resync, every tenant account). Phase 2 (--retire): the operator JWT "
        "trusts the new key only; with --nats and the system user's --creds it first checks that no account "
        "the servers hold is still signed by the previous key. Reload the servers again.")
    parser.add_argument("--trust", type=Path, required=True, help="trust chain JSON, rewritten in place (0600)")
    parser.add_argument("--retire", action="store_true", help="phase 2: retire the previous signing key")
    parser.add_argument("--server-config", type=Path, help="write the nats-server config lines for the new chain")
    parser.add_argument("--nats", action="append", default=[], metavar="URL", help="with --retire: a server to check")
    parser.add_argument("--creds", help="with --nats: the system user's credentials")
    parser.add_argument("--tls-ca", help="with --nats: CA bundle of the server certificate")
    parser.set_defaults(handler=run_rotate_operator_key)


def run_operator(args: argparse.Namespace) -> int:
    if args.crd:
        from mt5fleet.operator.core import crd

        print(crd.render(), end="")
        return 0
    if not args.nats or not args.trust:
        raise SystemExit("mt5fleet operator: --nats URL and --trust FILE are required")
    if args.users_per_worker < 1 or args.resync <= 0:
        raise SystemExit("mt5fleet operator: --users-per-worker must be at least 1 and --resync positive")
    from mt5fleet.operator.app import runtime
    from mt5fleet.proto.runtime.natsconn import NatsSettings

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = runtime.OperatorOptions(
        nats=NatsSettings(servers=tuple(args.nats), name="mt5fleet-operator", creds_file=args.creds,
                          tls_ca=args.tls_ca),
        trust_file=args.trust, agent_nats_urls=tuple(args.agent_nats), agent_ca_file=args.agent_ca,
        tiers_file=args.tiers, brokers_file=args.brokers,
        http_port=args.http_port, layout=_layout(args), users_per_worker=args.users_per_worker)
    if args.local:
        asyncio.run(runtime.run_local(options, args.local, args.state))
    else:
        return runtime.run_cluster(options, namespace=args.namespace, worker_deployment=args.worker_deployment,
                                   kubeconfig=args.kubeconfig, election=_election(args), resync_s=args.resync)
    return 0


def _election(args: argparse.Namespace):
    if args.no_leader_election:
        return None
    from mt5fleet.operator.app.elected import Election
    from mt5fleet.operator.core.leadership import LeaseTiming

    try:
        timing = LeaseTiming.from_duration(args.lease_duration, args.lease_renew)
    except ValueError as exc:
        raise SystemExit(f"mt5fleet operator: {exc}") from None
    return Election(lease_name=args.lease, timing=timing)


def run_trust_chain(args: argparse.Namespace) -> int:
    import os

    from mt5fleet.operator.adapters.nats_accounts import create_trust_chain

    chain = create_trust_chain()
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(chain.to_json())
    print(f"trust chain written to {args.out} (secret: keep it 0600 or in a Kubernetes Secret)")
    if args.server_config:
        lines = chain.server_mode().config_lines(Path("/data/jwt"))
        args.server_config.write_text("\n".join(lines) + "\n")
        print(f"nats-server config lines written to {args.server_config}")
    if args.creds_dir:
        from mt5fleet.operator.adapters.nats_accounts import write_creds

        args.creds_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, user in (("service", chain.service_user), ("system", chain.system_user),
                           ("signals", chain.producer_user), ("worker", chain.worker_user)):
            print(f"{name} user credentials written to {write_creds(args.creds_dir / f'{name}.creds', user)}")
    return 0


def run_rotate_operator_key(args: argparse.Namespace) -> int:
    from mt5fleet.operator.adapters.nats_accounts import TrustChain

    chain = TrustChain.from_json(args.trust.read_text())
    try:
        if args.retire:
            previous = chain.previous_operator_signing
            still = asyncio.run(_still_signed_by(args, previous.public_key)) if previous and args.nats else []
            if still:
                print(f"refused: {len(still)} account(s) still signed by the previous key: {', '.join(still)}; "
                      "let the operator re-sign them (restart it, wait a resync) and try again")
                return 1
            rotated = chain.retire_previous_operator_signing()
        else:
            rotated = chain.rotate_operator_signing()
    except ValueError as exc:
        raise SystemExit(f"mt5fleet nats rotate-operator-key: {exc}") from None
    _replace_secret_file(args.trust, rotated.to_json())
    print(f"operator signing key {'retired the previous; now' if args.retire else 'rotated; signing with'} "
          f"{rotated.operator_signing.public_key}; trusted: {', '.join(rotated.trusted_signers)}")
    if args.server_config:
        args.server_config.write_text("\n".join(rotated.server_mode().config_lines(Path("/data/jwt"))) + "\n")
        print(f"nats-server config lines written to {args.server_config}: reload every server with them")
    return 0


async def _still_signed_by(args: argparse.Namespace, key: str) -> list[str]:
    from mt5fleet.operator.adapters.nats_accounts import accounts_signed_by
    from mt5fleet.proto.runtime import natsconn

    nc = await natsconn.connect(natsconn.NatsSettings(servers=tuple(args.nats), name="mt5fleet-rotate",
                                                      creds_file=args.creds, tls_ca=args.tls_ca))
    try:
        return await accounts_signed_by(nc, key)
    finally:
        await nc.close()


def _replace_secret_file(path: Path, text: str) -> None:
    """Write next to ``path`` as 0600, then rename over it: never a half-written chain."""
    import os

    staging = path.with_name(path.name + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(staging, path)


def _layout(args: argparse.Namespace):
    import tomllib

    from mt5fleet.proto.subjects import build_layout

    overrides = tomllib.loads(args.jetstream_config.read_text()) if args.jetstream_config else {}
    if args.replicas is not None:
        overrides["replicas"] = args.replicas
    return build_layout(overrides)
