"""Local-mode admission of a TradingClient spec: what ``operator.core.admission.parse_spec``
costs per spec (structural defaulting, jsonschema on the CRD's own schema, the CRD's CEL
rules with cel-python, the typed model), next to a baseline measured in the same run: the
jsonschema check alone of the same defaulted spec, the floor any schema-based reader pays.

Specs: the four examples (free, pro, pro over its limit, enterprise) and a worst case, an
enterprise spec at the CRD's symbol limits (64 trading, 64 monitoring: the uniqueness rules
are quadratic). "cold" clears the cache of admitted specs before each read (a spec never
seen: the first local pass, a changed file); "warm" reads it again (resyncs, kopf timers);
"admitted" is a cold read of a body the API server already admitted (kopf's: no CEL).

    python bench/admission.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mt5fleet.operator.core import admission
from mt5fleet.proto.domain.instruments import STANDARD_SYMBOLS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def specs() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "TradingClient":
                found[path.stem] = doc["spec"]
    symbols = sorted(STANDARD_SYMBOLS) + [f"CUS{n:03d}" for n in range(128)]
    found["enterprise-64x64"] = {**found["dave-enterprise"], "symbols": {
        "trading": symbols[:64], "monitoring": symbols[64:128]}}
    return found


def median_us(call: Callable[[], Any], repeat: int, before: Callable[[], Any] = lambda: None) -> float:
    samples = []
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    clear = admission._parse_json.cache_clear  # noqa: SLF001 - the cache is what "cold" must bypass
    validator, schema = admission._spec_validator(), admission._spec_schema()  # noqa: SLF001
    print(f"{'spec':<22}{'cold µs':>10}{'warm µs':>9}{'admitted µs':>13}{'jsonschema µs':>15}"
          f"{'cold/base':>11}{'admitted/base':>15}")
    for name, body in specs().items():
        repeat = max(5, args.repeat // 20) if "64" in name else args.repeat
        admission.parse_spec(body)  # compile the schema and rules once
        cold = median_us(lambda b=body: admission.parse_spec(b), repeat, clear)
        warm = median_us(lambda b=body: admission.parse_spec(b), repeat)
        admitted = median_us(lambda b=body: admission.parse_spec(b, rules=False), repeat, clear)
        spec = admission.defaulted(schema, body)
        floor = median_us(lambda s=spec: validator.is_valid(s), repeat)
        print(f"{name:<22}{cold:>10.0f}{warm:>9.1f}{admitted:>13.0f}{floor:>15.0f}"
              f"{cold / floor:>10.1f}x{admitted / floor:>14.1f}x")


if __name__ == "__main__":
    main()
