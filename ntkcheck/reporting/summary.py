"""A summary run of the empirical kernels on the available device.

For a few MLPs it checks that the three exact methods agree, and times the
layerwise kernel against the jacobian method; the result is a Markdown report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ntkcheck._support.atomic import staged
from ntkcheck.kernels.empirical import ntk
from ntkcheck.models import MLP


@dataclass(frozen=True)
class SummaryRow:
    architecture: str
    n: int
    dtype: str
    max_disagreement: float
    layerwise_s: float
    jacobian_s: float


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """The result of ``fn()`` and the seconds of one call after a warm-up call."""
    warm = fn()
    if warm.is_cuda:
        torch.cuda.synchronize(warm.device)  # the warm-up's kernels must not count in the timed call
    t0 = time.perf_counter()
    out = fn()
    if out.is_cuda:
        torch.cuda.synchronize(out.device)
    return out, time.perf_counter() - t0


def run_summary(device: torch.device, *, quick: bool = False) -> list[SummaryRow]:
    """Kernels of a few MLPs on ``device``: agreement of the methods and their times."""
    big = device.type == "cuda"
    configs = [
        (dict(in_features=8, widths=[64, 64], out_features=1, activation="relu"), 64, torch.float64),
        (dict(in_features=8, widths=[32, 32, 32], out_features=3, activation="tanh"), 32, torch.float64),
        (dict(in_features=16, widths=[512] * 3, out_features=1, activation="relu"), 1024 if big else 256,
         torch.float32),
    ]
    if quick:
        configs = configs[:2]
    rows = []
    for kwargs, n, dtype in tqdm(configs, desc="kernels", unit="net"):
        gen = torch.Generator().manual_seed(0)
        model = MLP(**kwargs, generator=gen, dtype=dtype, device=device)
        x = torch.randn(n, kwargs["in_features"], generator=gen, dtype=dtype).to(device)
        small = x[: min(n, 16)]
        ref = ntk(model, small, method="jacobian")
        disagreement = max(
            float((ntk(model, small, method=m) - ref).norm() / ref.norm()) for m in ("layerwise", "ntvp")
        )
        _, t_layer = _timed(lambda: ntk(model, x, method="layerwise"))
        _, t_jac = _timed(lambda: ntk(model, x, method="jacobian"))
        rows.append(SummaryRow(model.spec(), n, str(dtype).removeprefix("torch."), disagreement, t_layer, t_jac))
    return rows


def write_summary(rows: list[SummaryRow], device: torch.device, path: Path) -> Path:
    """Write the summary table as Markdown to ``path``, atomically (an interruption leaves the previous one)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [
        "# ntkcheck kernel summary",
        "",
        f"Device: {name}; torch {torch.__version__}; TF32 {torch.backends.cuda.matmul.allow_tf32}.",
        "",
        "| architecture | N | dtype | max rel. disagreement of methods | layerwise (s) | jacobian (s) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.architecture}` | {r.n} | {r.dtype} | {r.max_disagreement:.2e} | {r.layerwise_s:.4f} "
            f"| {r.jacobian_s:.4f} | {r.jacobian_s / r.layerwise_s:.1f}x |"
        )
    with staged(path.parent) as stage:
        return stage.write_text(path.name, "\n".join(lines) + "\n")
