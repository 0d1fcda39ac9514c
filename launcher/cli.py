"""The ``mt5fleet`` command. Each subcommand imports its component lazily, so the agent's
Windows install (without kopf or kubernetes) runs ``mt5fleet agent`` all the same."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path


def _version() -> str:
    try:
        return metadata.version("mt5fleet")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mt5fleet",
        description="Run a fleet of MetaTrader 5 trading clients over NATS JetStream.",
    )
    parser.add_argument("--version", action="version", version=f"mt5fleet {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_nats(commands)
    _add_agent(commands)
    _add_worker(commands)
    _add_demo(commands)
    from mt5fleet.launcher.audit import add_audit

    add_audit(commands)
    from mt5fleet.operator.app.cli import add_operator

    add_operator(commands)
    return parser


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="the embedded platform on this machine, with simulated agents and signals")
    demo.add_argument("--users", type=int, default=4, help="TradingClients: the 4 examples, then generated ones")
    demo.add_argument("--duration", type=float, default=45, help="seconds of signals after start-up")
    demo.add_argument("--signals-per-minute", type=float, default=20, help="rate of the demo signal feed")
    demo.add_argument("--run-dir", type=Path, help="new or empty folder for logs and state (default: a temporary one)")
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from mt5fleet.launcher.demo.platform import main as demo_main

    return demo_main(args)


def _add_worker(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser("worker",
                                 help="run a server-side worker (adjust, marketdata, feedback, health, catchup, "
                                 "calendar)")
    worker.add_argument("kind", choices=["adjust", "marketdata", "feedback", "health", "catchup", "calendar"])
    _add_connection_options(worker)
    worker.add_argument("--http-port", type=int, default=9465, help="port of /metrics, /healthz, /readyz")
    worker.add_argument("--http-host", default="0.0.0.0", help="address of the HTTP endpoints")  # noqa: S104
    worker.add_argument("--partitions", type=int, default=8, help="adjust: user partitions of the fleet")
    worker.add_argument("--feed", choices=["oanda", "simulated"],
                        help="marketdata (required): the reference feed; simulated only for a demo or a test")
    worker.add_argument("--symbols", default="", help="marketdata: comma-separated canonical symbols")
    worker.add_argument("--oanda-account", default="", help="marketdata: OANDA account id (token: $OANDA_TOKEN)")
    worker.add_argument("--oanda-environment", choices=["practice", "live"], default="practice")
    worker.add_argument("--news-before-min", type=int, default=15, metavar="MIN",
                        help="calendar: no new position for users with news trading off from MIN minutes before "
                        "a high-impact event of the pair's currencies (default 15); published with the calendar, so "
                        "workers and agents use the same window")
    worker.add_argument("--news-after-min", type=int, default=15, metavar="MIN",
                        help="calendar: ... until MIN minutes after it (default 15)")
    worker.add_argument("--calendar-source", default="", metavar="FILE|URL",
                        help="calendar (required): a weekly calendar export (ff_calendar_thisweek.json or .xml) "
                        "or an .ics, as a file (air-gapped) or an http(s) URL")
    worker.add_argument("--calendar-format", choices=["ff-json", "ff-xml", "ical"], default="",
                        help="calendar: the source's format (default: from its name)")
    worker.add_argument("--calendar-interval", type=float, default=900.0, metavar="S",
                        help="calendar: seconds between refreshes (default 900)")
    worker.add_argument("--jetstream-config", type=Path, help="the TOML given to `mt5fleet nats bootstrap --config` "
                        "(a stream, bucket or consumer the worker finds missing is re-created as bootstrap made it)")
    worker.add_argument("--replicas", type=int, help="the --replicas given to `mt5fleet nats bootstrap`")
    worker.set_defaults(handler=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    import logging

    from mt5fleet.proto.domain.clock import SystemClock
    from mt5fleet.proto.runtime.natsconn import NatsSettings
    from mt5fleet.workers.app.runner import WorkerOptions, run_worker

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    nats = NatsSettings(servers=tuple(args.server), name=f"mt5fleet-{args.kind}", creds_file=args.creds,
                        tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key)
    feed, clock = _reference_feed(args) if args.kind == "marketdata" else (None, SystemClock())
    from mt5fleet.proto.subjects import build_layout

    overrides = tomllib.loads(args.jetstream_config.read_text()) if args.jetstream_config else {}
    if args.replicas is not None:
        overrides["replicas"] = args.replicas
    from mt5fleet.proto.domain.calendar import MINUTE_MS, NewsWindow
    from mt5fleet.workers.adapters.calendar_source import calendar_source

    if args.kind == "calendar" and not args.calendar_source:
        raise ValueError("mt5fleet worker calendar needs --calendar-source FILE or URL")
    source = calendar_source(args.calendar_source, args.calendar_format) if args.calendar_source else None
    options = WorkerOptions(kind=args.kind, nats=nats, http_host=args.http_host, http_port=args.http_port,
                            partitions=args.partitions, feed=feed, feed_clock=clock, layout=build_layout(overrides),
                            news_window=NewsWindow(args.news_before_min * MINUTE_MS, args.news_after_min * MINUTE_MS),
                            calendar_source=source, calendar_interval_s=args.calendar_interval)
    asyncio.run(run_worker(options))
    return 0


NO_FEED = ("mt5fleet worker marketdata needs a reference feed: --feed oanda --oanda-account ID (with the API "
           "token in $OANDA_TOKEN) for live prices, or --feed simulated for a demo or a test")


def _reference_feed(args: argparse.Namespace):
    """The market-data worker's feed and the clock its ticks are stamped with. Built here, in
    the composition root, so the worker never imports the simulator; never simulated unless
    asked, so a deployment that forgot its feed fails at once instead of publishing fake prices."""
    import os

    if args.feed is None:
        raise ValueError(NO_FEED)
    symbols = tuple(s for s in args.symbols.split(",") if s)
    if args.feed == "simulated":
        from mt5fleet.launcher.simulated_feed import simulated_feed

        return simulated_feed(symbols, os.environ)
    from mt5fleet.proto.domain.clock import SystemClock
    from mt5fleet.workers.adapters.feeds import OandaConfig, OandaPricingStream

    token = os.environ.get("OANDA_TOKEN", "")
    if not token or not args.oanda_account:
        raise ValueError("the OANDA feed needs --oanda-account and the OANDA_TOKEN environment variable")
    config = OandaConfig.for_environment(args.oanda_environment, account_id=args.oanda_account, token=token,
                                         symbols=symbols)
    return OandaPricingStream(config), SystemClock()


def _add_agent(commands: argparse._SubParsersAction) -> None:
    agent = commands.add_parser("agent", help="run the client agent beside MetaTrader 5",
                                description="Run the client agent beside MetaTrader 5 (or a simulated terminal).")
    agent.add_argument("--config", type=Path, help="agent TOML config file (see examples/agent.toml)")
    actions = agent.add_subparsers(dest="agent_command", metavar="ACTION")
    keygen = actions.add_parser("keygen", help="create the AES-256 key that seals the MT5 password")
    keygen.add_argument("--out", type=Path, required=True, help="key file to create (never overwritten)")
    seal = actions.add_parser("seal-password", help="seal an MT5 password for the config file's mt5.password")
    seal.add_argument("--login", type=int, required=True)
    seal.add_argument("--server", required=True)
    seal.add_argument("--key-file", type=Path, help="key file (default: $MT5FLEET_AGENT_KEY)")
    from mt5fleet.launcher.agent_handover import add_handover

    add_handover(actions)
    agent.set_defaults(handler=_run_agent)


def _run_agent(args: argparse.Namespace) -> int:
    from mt5fleet.client.app import keys

    if args.agent_command == "keygen":
        return keys.main(["generate-key", "--out", str(args.out)])
    if args.agent_command == "seal-password":
        extra = ["--key-file", str(args.key_file)] if args.key_file else []
        return keys.main(["seal", "--login", str(args.login), "--server", args.server, *extra])
    from mt5fleet.launcher.agent_handover import run_handover

    handed = run_handover(args)
    if handed is not None:
        return handed
    if args.config is None:
        raise ValueError("mt5fleet agent needs --config FILE (see examples/agent.toml)")
    from mt5fleet.launcher.agent import main as agent_main

    return agent_main(str(args.config))


def _add_nats(commands: argparse._SubParsersAction) -> None:
    nats_parser = commands.add_parser("nats", help="NATS JetStream administration")
    nats_commands = nats_parser.add_subparsers(dest="nats_command", metavar="ACTION", required=True)

    boot = nats_commands.add_parser(
        "bootstrap",
        help="create or update the fleet's streams, KV buckets and consumers (idempotent)",
    )
    _add_connection_options(boot)
    boot.add_argument("--config", type=Path, help="TOML file of JetStream overrides (limits, replicas)")
    boot.add_argument("--replicas", type=int, help="replicas of every stream and bucket (3 on a cluster)")
    boot.set_defaults(handler=_run_bootstrap)

    embedded = nats_commands.add_parser(
        "embedded",
        help="start a local nats-server with JetStream, bootstrap it and print what it created",
    )
    embedded.add_argument("--binary", help="nats-server binary (default: the virtualenv's, then PATH)")
    embedded.add_argument("--store", type=Path, help="JetStream store folder (default: a temporary one)")
    embedded.add_argument(
        "--hold", type=float, default=0,
        help="keep the server running this many seconds (-1: until Ctrl-C); default: stop at once",
    )
    embedded.set_defaults(handler=_run_embedded)

    from mt5fleet.operator.app.cli import add_trust_chain

    add_trust_chain(nats_commands)


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", action="append", required=True, metavar="URL",
                        help="NATS URL; repeat for failover (nats://, tls://)")
    parser.add_argument("--creds", help="NATS credentials file (user JWT and NKey seed)")
    parser.add_argument("--tls-ca", help="CA bundle that signed the server certificate")
    parser.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="client certificate key (mutual TLS)")


def _layout_from(args: argparse.Namespace):
    from mt5fleet.proto.subjects import build_layout

    overrides = tomllib.loads(args.config.read_text()) if args.config else {}
    if args.replicas is not None:
        overrides["replicas"] = args.replicas
    return build_layout(overrides)


async def _bootstrap(servers: Sequence[str], layout, **tls) -> list:
    from mt5fleet.proto.runtime.bootstrap import bootstrap
    from mt5fleet.proto.runtime.natsconn import NatsSettings, connect

    settings = NatsSettings(servers=tuple(servers), name="mt5fleet-bootstrap",
                            reconnect=False, max_reconnect_attempts=1, **tls)
    client = await connect(settings)
    try:
        return await bootstrap(client.jetstream(), layout)
    finally:
        await client.close()


def _print_changes(changes) -> None:
    from mt5fleet.proto.runtime.bootstrap import summarise

    for change in changes:
        print(change)
    print(", ".join(f"{count} {action}" for action, count in summarise(changes).items()))


def _run_bootstrap(args: argparse.Namespace) -> int:
    layout = _layout_from(args)
    tls = {"creds_file": args.creds, "tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    _print_changes(asyncio.run(_bootstrap(args.server, layout, **tls)))
    return 0


def _run_embedded(args: argparse.Namespace) -> int:
    import time

    from mt5fleet.proto.runtime.embedded_nats import EmbeddedNats
    from mt5fleet.proto.subjects import build_layout

    with EmbeddedNats(binary=args.binary, store_dir=args.store) as server:
        version = ".".join(map(str, server.version))
        print(f"nats-server {version} ({server.binary}) with JetStream at {server.url}")
        print(f"monitoring: {server.monitor_url}   store: {server.store_dir}")
        _print_changes(asyncio.run(_bootstrap([server.url], build_layout())))
        if args.hold:
            print("running; Ctrl-C to stop" if args.hold < 0 else f"running for {args.hold:g}s")
            try:
                time.sleep(args.hold if args.hold > 0 else 10**9)
            except KeyboardInterrupt:
                pass
        print("stopping nats-server")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI's edge: one clear line, not a traceback
        from mt5fleet.proto.runtime.errors import describe

        print(f"mt5fleet: error: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
