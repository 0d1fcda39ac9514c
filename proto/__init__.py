"""mt5fleet.proto: see docs/architecture.md."""

if __name__ != "mt5fleet.proto":  # pragma: no cover - guards a mistaken bare import
    raise ImportError(
        f"'{__name__}' is the folder of package mt5fleet.proto; "
        "install the project (pip install -e .) and import mt5fleet.proto"
    )
