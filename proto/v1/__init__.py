"""Generated protobuf modules of package mt5fleet.v1. Do not edit."""
