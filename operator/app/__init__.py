"""The app layer of mt5fleet.operator: assembles its core and adapters into running services."""
