"""The adapters of mt5fleet.client: the only modules here that do I/O."""
