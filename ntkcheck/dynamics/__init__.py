"""Training dynamics in the kernel regime: linearization, losses, kernel solvers, gradient flows, Gaussian
process inference and training of the network itself (seed 000 eqs (2)-(7)).

Imports :mod:`ntkcheck.kernels`, :mod:`ntkcheck.models` and :mod:`ntkcheck._support` only.
"""
