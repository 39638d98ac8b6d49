"""A catalogue of plausible bugs (mutants) of ntkcheck that the property suite must catch.

Each :class:`Mutant` replaces one object of the library (a function, a method, a class
attribute) by a subtly wrong version — the kind of slip a maintainer could make and every
unit test could miss.  ``pytest --ntkcheck-mutant NAME`` applies one before the properties
are collected; ``ntkcheck verify --mutants`` runs the properties once per mutant and reports
which property killed it.  A mutant that survives is a claim the suite does not really check.

The catalogue lives in one module per area (``_flows``, ``_solvers``, ``_kernels``,
``_transforms``, ``_analytic``); its names are unique.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    """One plausible bug: ``target`` ("package.module:Qualified.name") is replaced by ``make(original)``."""

    name: str
    description: str
    target: str
    make: Callable[[object], object]


def _resolve(target: str) -> tuple[object, str, object]:
    """(owner, attribute, current value) of a "module:Qualified.name" target."""
    module_name, _, qualname = target.partition(":")
    owner: object = importlib.import_module(module_name)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, attr, getattr(owner, attr)


def _catalogue() -> dict[str, Mutant]:
    from ntkcheck.testing.mutants import _analytic, _flows, _kernels, _solvers, _transforms

    found: dict[str, Mutant] = {}
    for module in (_flows, _solvers, _kernels, _transforms, _analytic):
        for mutant in module.MUTANTS:
            if mutant.name in found:
                raise ValueError(f"mutant name {mutant.name!r} is defined twice")
            found[mutant.name] = mutant
    return found


def catalogue() -> dict[str, Mutant]:
    """Every mutant, by name."""
    return _catalogue()


def apply(name: str) -> Mutant:
    """Apply mutant ``name`` for the rest of this process.

    The replacement is installed on its owner and, when the target is a module-level
    object, in every loaded ``ntkcheck`` module that imported it by name (so
    ``from ntkcheck.dynamics.solvers import interpolate`` and ``ntkcheck.interpolate`` see it too).
    """
    mutants = catalogue()
    if name not in mutants:
        raise KeyError(f"mutant must be one of {sorted(mutants)}, got {name!r}")
    mutant = mutants[name]
    owner, attr, original = _resolve(mutant.target)
    replacement = mutant.make(original)
    setattr(owner, attr, replacement)
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "ntkcheck" or module_name.startswith("ntkcheck.")):
            continue
        for key, value in list(vars(module).items()):
            if value is original:
                setattr(module, key, replacement)
    return mutant
