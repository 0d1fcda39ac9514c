"""The adapters of mt5fleet.operator: the only modules here that do I/O."""
