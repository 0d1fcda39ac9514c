"""The adapters of mt5fleet.workers: the only modules here that do I/O."""
