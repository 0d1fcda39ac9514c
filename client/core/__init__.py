"""The pure core of mt5fleet.client: data and rules, no I/O and no protobuf."""
