"""The pure core of mt5fleet.operator: data and rules, no I/O and no protobuf."""
