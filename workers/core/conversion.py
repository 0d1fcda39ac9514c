"""Currency conversion from a user's own broker quotes, for sizing: a tick's value into the
account currency (risk-% sizing) and the account's money into USD (multiplier sizing).

Every quote used is held to the age rule of the traded symbol's quote (``policy.is_stale``):
a rate from a quote older than the user's max quote age is a skip (``stale_conversion``),
never a guess. A cent account (USC, EUC: ``instruments.MINOR_UNITS``) counts 1/100 of its
major currency; that part needs no quote.
"""

from __future__ import annotations

from collections.abc import Mapping

from mt5fleet.proto.domain.instruments import major_currency
from mt5fleet.proto.domain.market import Quote
from mt5fleet.workers.core.policy import Skip, SkipReason, is_stale
from mt5fleet.workers.core.sizing_inputs import Rate


def conversion_rate(source: str, target: str, quotes: Mapping[str, Quote], *, now_ms: int, max_age_ms: int,
                    higher: bool = True) -> Rate | Skip:
    """How much ``target`` one unit of ``source`` is worth, from the user's quotes.

    Of a pair's two sides, ``higher`` takes the one giving the higher rate (divide by the
    bid, multiply by the ask), else the lower: a tick value converted at the higher rate
    never understates a trade's risk, and money converted at the lower never buys more lots
    than it is worth. A skip says which quote is missing (``no_conversion``) or too old.
    """
    src, src_units = major_currency(source)
    dst, dst_units = major_currency(target)
    scale = dst_units / src_units
    if src == dst:
        return Rate(source, target, scale, _scaled("", scale))
    candidates = _candidates(src, dst, quotes, higher)
    fresh = [(rate, quote, side) for rate, quote, side in candidates if not is_stale(quote, now_ms, max_age_ms)]
    if fresh:
        value, quote, side = fresh[0]
        how = f" {'x' if quote.symbol == src + dst else '/'} {quote.symbol} {side} {getattr(quote, side):g}"
        return Rate(source, target, value * scale, _scaled(how, scale), quote.symbol, side, quote.time_ms)
    if candidates:
        _, quote, _ = candidates[0]
        return Skip(SkipReason.STALE_CONVERSION, f"the latest {quote.symbol} quote, needed to convert {source} to "
                                                 f"{target}, is {now_ms - quote.time_ms} ms old, the maximum is "
                                                 f"{max_age_ms} ms")
    return Skip(SkipReason.NO_CONVERSION, f"no {dst}{src} or {src}{dst} quote from the user to convert {source} "
                                          f"to {target} with")


def _candidates(src: str, dst: str, quotes: Mapping[str, Quote], higher: bool) -> list[tuple[float, Quote, str]]:
    """(rate, quote, side) from the inverse pair (e.g. USDJPY for JPY -> USD: 1 / price)
    and the direct one (USDJPY for USD -> JPY: the price), in that order."""
    found: list[tuple[float, Quote, str]] = []
    inverse = quotes.get(dst + src)
    if inverse is not None:
        side = "bid" if higher else "ask"
        found.append((1.0 / getattr(inverse, side), inverse, side))
    direct = quotes.get(src + dst)
    if direct is not None:
        side = "ask" if higher else "bid"
        found.append((getattr(direct, side), direct, side))
    return found


def _scaled(how: str, scale: float) -> str:
    if scale == 1:
        return how
    return f"{how} x {scale:g}" if scale > 1 else f"{how} / {1 / scale:g}"
