"""The simulated MetaTrader 5 terminal: same functions, constants and records as the real package."""
