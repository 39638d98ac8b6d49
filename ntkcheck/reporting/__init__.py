"""Reports written by the ``ntkcheck`` command: benchmark regression reports and kernel summaries."""
