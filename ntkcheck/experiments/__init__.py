"""Reproductions of the seed papers' experiments: real networks, real data, figures and verdicts.

Each experiment is a module here with a ``Config`` dataclass (``Config.quick()``
sized for 2 CPU cores, ``Config.full()`` larger, at the paper's sizes where the paper
gives them and runs on a GPU in minutes) and ``run(config, *, device) -> Reproduction``.
Verdicts are on the mean over several seeds (:func:`verdict`), large-width claims carry
their width sweep (:class:`WidthTrend`).  :func:`reproduce` runs one by name;
``ntkcheck reproduce`` runs several and writes their reports (:func:`write_report`, all
or nothing).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ntkcheck.experiments._result import (
    Mode,
    Reproduction,
    Stopwatch,
    Verdict,
    WidthTrend,
    mode_of,
    verdict,
    write_report,
)

EXPERIMENTS: dict[str, str] = {
    "loss-invariance": "loss_invariance",
    "asi-1d": "asi_1d",
    "boston": "boston",
    "mnist": "mnist",
    "sigma-scaling": "sigma_scaling",
    "init-rates": "init_rates",
    "frequency": "frequency",
}

__all__ = [
    "EXPERIMENTS",
    "Mode",
    "Reproduction",
    "Stopwatch",
    "Verdict",
    "WidthTrend",
    "experiment",
    "mode_of",
    "reproduce",
    "verdict",
    "write_report",
]


def experiment(name: str) -> ModuleType:
    """The module of experiment ``name`` (one of :data:`EXPERIMENTS`)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"name must be one of {sorted(EXPERIMENTS)}, got {name!r}")
    return importlib.import_module(f"ntkcheck.experiments.{EXPERIMENTS[name]}")


def reproduce(name: str, mode: Mode = "quick", *, device: str = "cpu", seed: int = 0) -> Reproduction:
    """Run experiment ``name`` at the ``mode`` sizes (``"quick"`` or ``"full"``) on ``device``."""
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    module = experiment(name)
    config = module.Config.quick(seed=seed) if mode == "quick" else module.Config.full(seed=seed)
    return module.run(config, device=device)
