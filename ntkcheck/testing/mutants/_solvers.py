"""Mutants of the solvers area (see :mod:`ntkcheck.testing.mutants`)."""

from __future__ import annotations

from ntkcheck.testing.mutants import Mutant

MUTANTS: list[Mutant] = []
