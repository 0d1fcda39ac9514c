"""The app layer of mt5fleet.workers: assembles its core and adapters into running services."""
