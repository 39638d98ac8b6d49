"""Reports written by the ``ntkcheck`` command: benchmark regression reports and kernel summaries.

The benchmark report reads pytest-benchmark JSON runs (:mod:`~ntkcheck.reporting.runs`),
compares a run against a stored baseline (:mod:`~ntkcheck.reporting.compare`), draws its
figures (:mod:`~ntkcheck.reporting.figures`) and writes the Markdown
(:mod:`~ntkcheck.reporting.benchmark_report`); :mod:`~ntkcheck.reporting.summary` times
the kernels of a few MLPs on the available device.
"""
