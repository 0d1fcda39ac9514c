"""mt5fleet.launcher: the composition root. The ``mt5fleet`` command and the embedded demo
are the only code that assembles several components; see docs/architecture.md."""

if __name__ != "mt5fleet.launcher":  # pragma: no cover - guards a mistaken bare import
    raise ImportError(
        f"'{__name__}' is the folder of package mt5fleet.launcher; "
        "install the project (pip install -e .) and import mt5fleet.launcher"
    )
