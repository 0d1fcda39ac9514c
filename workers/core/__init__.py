"""The pure core of mt5fleet.workers: data and rules, no I/O and no protobuf."""
