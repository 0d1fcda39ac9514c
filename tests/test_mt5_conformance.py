"""The simulated terminal against the real MetaTrader5 package's published wheel.

The real package only runs on Windows, but its wheel can be read anywhere: ``__init__.py``
holds every module-level constant and the pure-Python helpers, and the compiled ``_core``
holds, as plain ASCII strings, each function's name and call-shape docstring and each
record type's name, docstring and field names. ../shared/reference/metatrader5-api.txt
was read off the same wheel and gives what the binary cannot show plainly: field order.

The wheel is downloaded from the package registry once per session. When the download
fails this test fails: a conformance check that quietly skips proves nothing.
"""

from __future__ import annotations

import ast
import inspect
import operator
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mt5fleet.client.core import mt5_constants
from mt5fleet.client.sim import records
from mt5fleet.client.sim.broker import BROKERS
from mt5fleet.client.sim.feed import ReferenceFeed
from mt5fleet.client.sim.terminal import SimulatedMetaTrader5

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "metatrader5-api.txt"
PIP_DOWNLOAD = ["download", "--no-deps", "--only-binary=:all:", "--platform", "win_amd64", "--python-version",
                "3.11", "MetaTrader5"]
_BINARY_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.Add: operator.add, ast.Sub: operator.sub,
    ast.Mult: operator.mul, ast.LShift: operator.lshift,
}


@dataclass(frozen=True)
class RealPackage:
    version: str
    constants: dict[str, int]
    helpers: dict[str, ast.FunctionDef]  # the pure-Python functions of __init__.py
    strings: frozenset[str]  # ASCII strings of the compiled _core
    call_shapes: dict[str, str]  # function name -> its docstring's first line, "name(args)"


def _literal(node: ast.expr) -> int:
    """The value of a constant's expression: integers joined by | & + - * <<, nothing else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
        return _BINARY_OPERATORS[type(node.op)](_literal(node.left), _literal(node.right))
    raise ValueError(f"unexpected constant expression: {ast.dump(node)}")


def _read_init(source: str) -> tuple[str, dict[str, int], dict[str, ast.FunctionDef]]:
    version, constants, helpers = "", {}, {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "__version__":
                version = ast.literal_eval(node.value)
            elif name.isupper():
                constants[name] = _literal(node.value)
        elif isinstance(node, ast.FunctionDef):
            helpers[node.name] = node
    return version, constants, helpers


def _download_wheel(folder: Path) -> Path:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", *PIP_DOWNLOAD, "-d", str(folder)], capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("downloading the MetaTrader5 wheel timed out; the conformance test needs the package registry")
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.fail(f"could not download the real MetaTrader5 wheel (pip exit {done.returncode}); the conformance "
                    f"test needs the package registry.\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wheels[0]


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealPackage:
    with zipfile.ZipFile(_download_wheel(tmp_path_factory.mktemp("mt5-wheel"))) as wheel:
        init = wheel.read("MetaTrader5/__init__.py").decode("utf-8")
        core = next(name for name in wheel.namelist() if re.fullmatch(r"MetaTrader5/_core[^/]*\.pyd", name))
        binary = wheel.read(core)
    version, constants, helpers = _read_init(init)
    strings = frozenset(s.decode("ascii") for s in re.findall(rb"[\x20-\x7e]{2,}", binary))
    shapes = {m.group(1): s for s in strings if (m := re.fullmatch(r"([a-z_][a-z0-9_]*)\(.*\)", s))}
    return RealPackage(version, constants, helpers, strings, shapes)


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, str], dict[str, tuple[str, list[str]]]]:
    """(function -> METH flags, record type -> (doc, fields)) from the reference file."""
    if not REFERENCE.exists():
        pytest.fail(f"reference not found at {REFERENCE}: the conformance test needs ../shared/reference")
    text = REFERENCE.read_text()
    functions = dict(re.findall(r"^(\w+) \| flags=(0x\d+) \|", text, re.MULTILINE))
    types = {name: (doc, fields.split(", "))
             for name, doc, fields in re.findall(r"^(\w+) \(\d+ fields; doc='([^']*)'\): (.+)$", text, re.MULTILINE)}
    assert len(functions) == 32 and len(types) == 11, "the reference file's format changed"
    return functions, types


@pytest.fixture(scope="module")
def sim() -> SimulatedMetaTrader5:
    return SimulatedMetaTrader5(BROKERS["icm-raw"], ReferenceFeed(seed=1), clock=lambda: 1_709_726_400.0)


def test_the_wheel_is_the_real_package(real: RealPackage) -> None:
    assert real.version and len(real.constants) > 200 and {"Buy", "Sell", "Close"} <= set(real.helpers)
    assert "No IPC connection" in real.strings or "IPC call failed" in real.strings


def test_every_constant_has_the_real_value(real: RealPackage, sim: SimulatedMetaTrader5) -> None:
    wrong_in_sim = {n: (v, getattr(sim, n, None)) for n, v in real.constants.items() if getattr(sim, n, None) != v}
    assert not wrong_in_sim, f"(real, simulated) values differ: {wrong_in_sim}"
    wrong_in_module = {n: (v, getattr(mt5_constants, n, None)) for n, v in real.constants.items()
                       if getattr(mt5_constants, n, None) != v}
    assert not wrong_in_module, f"(real, mt5_constants) values differ: {wrong_in_module}"
    invented = {n for n in dir(sim) if n.isupper()} - set(real.constants)
    assert not invented, f"constants the real package does not have: {sorted(invented)}"


def test_every_real_function_is_a_callable_of_the_sim(real: RealPackage, reference: Any,
                                                      sim: SimulatedMetaTrader5) -> None:
    functions, _ = reference
    assert set(real.call_shapes) == set(functions), "the wheel's functions differ from the reference list"
    missing = [name for name in functions if not callable(getattr(sim, name, None))]
    assert not missing, f"functions of the real package missing from the sim: {missing}"


def _call_shape(shape: str) -> tuple[list[str], list[str]]:
    """(positional names, keyword names) of a docstring like 'f(symbol,[enable])' or 'f([group="GROUP"])'."""
    inside = shape[shape.index("(") + 1:shape.rindex(")")]
    keywords = re.findall(r"(\w+)=", inside)
    names = re.findall(r"\w+", re.sub(r'=("[^"]*"|\w+)', "", inside))
    return [name for name in names if name not in keywords], keywords


def _accepts(function: Callable[..., Any], name: str, args: tuple[int, ...], kwargs: dict[str, None]) -> None:
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError as error:
        raise AssertionError(f"{name} does not take the real call shape {args} {kwargs}: {error}") from None


def test_every_function_takes_the_real_call_shape(real: RealPackage, reference: Any,
                                                  sim: SimulatedMetaTrader5) -> None:
    functions, _ = reference
    # Keywords the docstrings leave out but the binary parses (see the reference file).
    undocumented = {"initialize": ["timeout", "portable"], "login": ["timeout"]}
    for name, flags in functions.items():
        positional, keywords = _call_shape(real.call_shapes[name])
        signature = inspect.signature(getattr(sim, name))
        if flags == "0x4":  # METH_NOARGS
            assert not positional and not keywords and not signature.parameters, name
            continue
        arguments = tuple(range(len(positional)))
        _accepts(getattr(sim, name), name, arguments, {})  # every documented positional argument fits
        for keyword in keywords + undocumented.get(name, []):
            assert keyword in real.strings, f"{name}: keyword {keyword!r} not in the binary"
            _accepts(getattr(sim, name), name, arguments, {keyword: None})


def test_every_record_type_has_the_real_fields_in_order(real: RealPackage, reference: Any) -> None:
    _, types = reference
    assert set(records.RECORD_TYPES) == set(types)
    for name, (doc, fields) in types.items():
        simulated = records.RECORD_TYPES[name]
        assert list(simulated._fields) == fields, f"{name}: fields differ from the reference"
        assert simulated.__doc__ == doc, f"{name}: docstring differs"
        assert name in real.strings and doc in real.strings, f"{name} not in the binary"
        absent = [field for field in fields if field not in real.strings]
        assert not absent, f"{name}: fields not in the binary: {absent}"
        assert hasattr(simulated, "_asdict")


def test_rates_dtype_fields_are_the_real_ones(real: RealPackage) -> None:
    assert all(field in real.strings for field in records.Bar._fields)
    assert records.Tick._fields == ("time", "bid", "ask", "last", "volume", "time_msc", "flags", "volume_real")


def test_the_pure_python_helpers_have_the_real_signatures(real: RealPackage, sim: SimulatedMetaTrader5) -> None:
    for name, definition in real.helpers.items():
        if name.startswith("_"):
            continue
        args = definition.args
        real_positional = [a.arg for a in args.args]
        real_keyword_only = [a.arg for a in args.kwonlyargs]
        parameters = inspect.signature(getattr(sim, name)).parameters.values()
        simulated_positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
        simulated_keyword_only = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
        assert (simulated_positional, simulated_keyword_only) == (real_positional, real_keyword_only), name
        real_defaults = [ast.literal_eval(d) for d in args.defaults]
        simulated_defaults = [p.default for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD
                              and p.default is not p.empty]
        assert simulated_defaults == real_defaults, name
