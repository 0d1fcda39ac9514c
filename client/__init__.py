"""mt5fleet.client: see docs/architecture.md."""

if __name__ != "mt5fleet.client":  # pragma: no cover - guards a mistaken bare import
    raise ImportError(
        f"'{__name__}' is the folder of package mt5fleet.client; "
        "install the project (pip install -e .) and import mt5fleet.client"
    )
