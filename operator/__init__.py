"""mt5fleet.operator: the kopf operator and its local mode; see docs/architecture.md."""

if __name__ == "operator":  # pragma: no cover - exercised in a subprocess by the tests
    # A checkout's root ahead of the standard library on sys.path (python -S, PYTHONPATH=.)
    # would make this folder shadow the stdlib's operator module. Hand the name back: the
    # import system returns whatever sys.modules holds once this module has run.
    import importlib.machinery as _machinery
    import importlib.util as _util
    import sys as _sys
    import sysconfig as _sysconfig

    _spec = _machinery.PathFinder.find_spec("operator", [_sysconfig.get_path("stdlib")])
    _stdlib_operator = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_stdlib_operator)
    _sys.modules["operator"] = _stdlib_operator
elif __name__ != "mt5fleet.operator":  # pragma: no cover - guards a mistaken bare import
    raise ImportError(
        f"'{__name__}' is the folder of package mt5fleet.operator; "
        "install the project (pip install -e .) and import mt5fleet.operator"
    )
