"""mt5fleet.operator: the kopf operator and its local mode; see docs/architecture.md."""

if __name__ == "operator":  # pragma: no cover - exercised in a subprocess by the tests
    # A checkout's root ahead of the standard library on sys.path (python -S, PYTHONPATH=.)
    # would make this folder shadow the stdlib's operator module. Hand the name back: the
    # import system returns whatever sys.modules holds once this module has run.
    # Only modules that never import operator themselves may be used here (importlib.util
    # pulls in collections, which imports operator: a circular import).
    import importlib.machinery as _machinery
    import os as _os
    import sys as _sys

    _spec = _machinery.PathFinder.find_spec("operator", [_os.path.dirname(_os.__file__)])
    _stdlib_operator = type(_sys)("operator")
    _stdlib_operator.__spec__, _stdlib_operator.__file__ = _spec, _spec.origin
    _spec.loader.exec_module(_stdlib_operator)
    _sys.modules["operator"] = _stdlib_operator
elif __name__ != "mt5fleet.operator":  # pragma: no cover - guards a mistaken bare import
    raise ImportError(
        f"'{__name__}' is the folder of package mt5fleet.operator; "
        "install the project (pip install -e .) and import mt5fleet.operator"
    )
