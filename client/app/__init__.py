"""The app layer of mt5fleet.client: assembles its core and adapters into running services."""
