"""The step and time limits of :func:`ntkcheck.dynamics.flows.ode_flow` and its progress bar."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ntkcheck.dynamics._ode.field import _PolarFlow
from ntkcheck.errors import FlowLimitError


class _Budget:
    """The step and time limits of one :func:`ntkcheck.dynamics.flows.ode_flow` call (all blocks together) and its
    progress bar."""

    def __init__(
        self, max_steps: int | None, max_seconds: float | None, ref: float, stop: str, progress: bool, blocks: int
    ) -> None:
        self.max_steps, self.max_seconds, self.ref, self.stop, self.blocks = max_steps, max_seconds, ref, stop, blocks
        self.steps, self.start = 0, time.perf_counter()
        self.label, self.log_r0, self.decades, self.shown = "", 0.0, "", -math.inf
        self.bar: Any = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(desc="ode_flow", leave=False, bar_format="{desc} [{elapsed}]")

    def begin(self, block: int, log_r0: float, log_stop: float | None) -> None:
        """Block ``block`` (0-based) starts at ``log |r0|``; ``log_stop``: its residual stop (None: on |g|)."""
        self.label = f" (block {block + 1} of {self.blocks})" if self.blocks > 1 else ""
        self.log_r0 = log_r0
        self.decades = "" if log_stop is None else f" of {max(log_r0 - log_stop, 0.0) / math.log(10):.1f}"

    def step(self, flow: _PolarFlow, u: np.ndarray) -> None:
        """One accepted step reached the state u; raise :class:`FlowLimitError` past a limit."""
        self.steps += 1
        seconds = time.perf_counter() - self.start
        if self.bar is not None and seconds - self.shown >= 0.2:
            self.shown = seconds
            self.bar.set_description_str(
                f"ode_flow{self.label}: |h - Y| down {(self.log_r0 - u[-2]) / math.log(10):.2f}{self.decades} "
                f"decades, t = {flow.tau * math.expm1(u[-1]):.3g}, {self.steps} steps"
            )
        over = []
        if self.max_steps is not None and self.steps > self.max_steps:
            over.append(f"max_steps={self.max_steps}")
        if self.max_seconds is not None and seconds > self.max_seconds:
            over.append(f"max_seconds={self.max_seconds:g}")
        if not over:
            return
        self.close()
        t, residual = flow.tau * math.expm1(u[-1]), math.exp(u[-2]) / self.ref
        raise FlowLimitError(
            f"ode_flow went past {' and '.join(over)} before its stop ({self.stop}): after {self.steps} integration "
            f"steps and {seconds:.3g} s it had reached flow time t = {t:.6g}{self.label} with "
            f"||h - Y|| / ||h_ini_train - Y|| = {residual:.3e}{' in this block' if self.label else ''}. "
            "Raise max_steps or max_seconds, or loosen tol, rtol or atol",
            t=t,
            residual=residual,
            steps=self.steps,
            seconds=seconds,
        )

    def close(self) -> None:
        """Close the progress bar, if one is shown."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
