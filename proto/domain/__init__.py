"""The domain every process shares, pure (no I/O, no protobuf): checked values, the typed
ClientConfig, ids, instruments, correlated symbols, FX market sessions and the clock.

The values are what the rest of the system works with once a message has passed the edge
(``mt5fleet.proto.validation``). Every value is frozen and slotted; a value of these types
has already been validated, so code holding one can rely on its invariants (finite
positive prices, ask >= bid, canonical symbols, sane timestamps). Conventions:

* prices are in the symbol's quote currency, spreads and deviations in points;
* timestamps are unix milliseconds and their names end in ``_ms``;
* a wire field documented as "0: none" becomes ``None`` here, so "no stop loss" can
  never be mistaken for a stop loss at price 0.
"""
