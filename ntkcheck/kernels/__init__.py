"""Kernels of a network: exact empirical NTKs (layer rules, tiling, operators, distributed and out-of-core
computation) and analytic infinite-width NTK/NNGP kernels with their Monte Carlo estimates.

Imports :mod:`ntkcheck.models` and :mod:`ntkcheck._support` only.
"""
