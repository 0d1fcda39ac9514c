"""What a failed call says in a status condition: short and stable.

``str()`` of a ``kubernetes.client.ApiException`` is the whole HTTP exchange (status line,
headers with the audit id and the date, the body), different on every attempt: written into
a condition it rewrites the status each retry and can pass the CRD's 4,096 characters. A
condition gets the status code, the reason and the API's own message instead; the full
exception goes to the log (and a short form to an Event).
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE = 512   # a condition's message stays far below the CRD's maxLength (4,096)


def describe(exc: BaseException, limit: int = MAX_MESSAGE) -> str:
    status = getattr(exc, "status", None)
    if isinstance(status, int) and hasattr(exc, "reason") and hasattr(exc, "body"):  # kubernetes ApiException
        text = f"HTTP {status} {exc.reason or ''}".rstrip()
        message = _api_message(exc.body)
        text = f"{text}: {message}" if message else text
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return cap(text, limit)


def cap(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _api_message(body: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body (no request-specific detail)."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not isinstance(body, str) or not body:
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip().splitlines()[0]
    return str(parsed.get("message", "")) if isinstance(parsed, dict) else ""
