"""Correlated symbols: which symbols to watch beside the ones a user trades, chosen from a
measured correlation matrix, with the seeds' static matrix before measurements exist. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Pair = tuple[str, str]

# The seeds' static matrix: what to watch for a primary symbol before measured data exists.
STATIC_CORRELATIONS: dict[str, tuple[str, ...]] = {
    "EURUSD": ("USDCHF", "EURGBP", "GBPUSD"),
    "GBPUSD": ("EURGBP", "USDCHF", "GBPJPY"),
    "USDJPY": ("EURJPY", "GBPJPY", "AUDJPY"),
}


def select_pairs(primary: Sequence[str], matrix: Mapping[Pair, float] | None, *, threshold: float = 0.7,
                 limit: int | None = None,
                 fallback: Mapping[str, Sequence[str]] = STATIC_CORRELATIONS) -> list[str]:
    """Correlation symbols for a user trading ``primary``: strongest |rho| first.

    A symbol qualifies when |rho| >= ``threshold`` with any primary symbol (its score is
    the strongest such |rho|). A primary symbol the matrix knows nothing about yet falls
    back to the static matrix; those symbols follow the measured ones, in seed order.
    A primary symbol with measurements but no strong partner contributes nothing: that
    is a result, not missing data. Primary symbols themselves are never returned.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within 0..1, not {threshold}")
    wanted = list(dict.fromkeys(primary))
    rows = _rows(matrix or {})
    scores: dict[str, float] = {}
    static: list[str] = []
    for symbol in wanted:
        row = rows.get(symbol)
        if not row:
            static.extend(fallback.get(symbol, ()))
            continue
        for other, rho in row.items():
            if abs(rho) >= threshold:
                scores[other] = max(scores.get(other, 0.0), abs(rho))
    measured = sorted(scores, key=lambda s: (-scores[s], s))
    chosen = [s for s in dict.fromkeys(measured + static) if s not in wanted]
    return chosen if limit is None else chosen[: max(limit, 0)]


def _rows(matrix: Mapping[Pair, float]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for (a, b), rho in matrix.items():
        if a != b and math.isfinite(rho):
            rows.setdefault(a, {})[b] = rho
            rows.setdefault(b, {})[a] = rho
    return rows


def pair_key(a: str, b: str) -> Pair:
    return (a, b) if a < b else (b, a)
