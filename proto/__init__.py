"""mt5fleet.proto: the base every process installs and imports.

At the top, the wire contract: the ``.proto`` sources (``mt5fleet/v1``), the generated code
(``v1``, never edited by hand; ``codegen`` regenerates it), the names of every subject,
stream and bucket (``subjects``) and the edge that decodes and validates inbound messages
into domain values (``validation*``). Beside it, what every process shares: ``domain``
(pure values and rules: trading and market values, ClientConfig, ids, instruments, FX
sessions, the clock) and ``runtime`` (I/O: NATS connections and bootstrap, the embedded
nats-server, TLS generation, password sealing, HTTP probes, task shutdown). It imports no
component. See docs/architecture.md.
"""

if __name__ != "mt5fleet.proto":  # pragma: no cover - guards a mistaken bare import
    raise ImportError(
        f"'{__name__}' is the folder of package mt5fleet.proto; "
        "install the project (pip install -e .) and import mt5fleet.proto"
    )
