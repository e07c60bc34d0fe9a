"""PEP 562 lazy loading for a package's public names: imported on first access."""

import importlib
import sys


def attach(package, names, subpackages=()):
    """Module-level `__getattr__` and `__dir__` for `package`.

    Args:
        package: The package's `__name__`.
        names: `{public name: submodule that defines it}` (relative, dotted).
        subpackages: Submodules reachable as attributes.

    Returns:
        `(__getattr__, __dir__)`. A name is bound on the package once imported, so later
        lookups do not reach `__getattr__`.
    """

    def __getattr__(name):
        if name in subpackages:
            # The import also binds the subpackage on the package.
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*vars(sys.modules[package]), *names, *subpackages})

    return __getattr__, __dir__
