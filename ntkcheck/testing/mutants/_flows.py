"""Mutants of the flows area (seed 000 eqs (2), (3), (7): ode_flow, mse_flow, mse_gd, training) (see :mod:`ntkcheck.testing.mutants`)."""

from __future__ import annotations

from ntkcheck.testing.mutants import Mutant

MUTANTS: list[Mutant] = []
