"""The embedded demo (`mt5fleet demo`): the whole platform in one process on this machine."""
