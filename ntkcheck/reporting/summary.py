"""A summary run of the empirical kernels on the available device.

For a few MLPs it checks that the three exact methods agree, and times the
layerwise kernel against the jacobian method; the result is a Markdown report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.benchmark import Timer
from tqdm import tqdm

from ntkcheck._support.atomic import staged
from ntkcheck._support.markdown import code, document, heading, table
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


def _timed(fn: Callable[[], torch.Tensor]) -> float:
    """Seconds of one call of ``fn`` after warm-up calls, CUDA work included
    (:class:`torch.utils.benchmark.Timer` on the current thread count)."""
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).timeit(1).median


def run_summary(device: torch.device, *, quick: bool = False) -> list[SummaryRow]:
    """Kernels of a few MLPs on ``device``: agreement of the methods and their times."""
    big = device.type == "cuda"
    configs = [
        (dict(in_features=8, widths=[64, 64], out_features=1, activation="relu"), 64, torch.float64),
        (dict(in_features=8, widths=[32, 32, 32], out_features=3, activation="tanh"), 32, torch.float64),
        (
            dict(in_features=16, widths=[512] * 3, out_features=1, activation="relu"),
            1024 if big else 256,
            torch.float32,
        ),
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
        t_layer = _timed(partial(ntk, model, x, method="layerwise"))
        t_jac = _timed(partial(ntk, model, x, method="jacobian"))
        rows.append(SummaryRow(model.spec(), n, str(dtype).removeprefix("torch."), disagreement, t_layer, t_jac))
    return rows


def write_summary(rows: list[SummaryRow], *, out: str | Path, device: torch.device) -> Path:
    """Write the summary table as Markdown to ``out/summary.md``, atomically (an interruption leaves the
    previous one); return its path."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [
        heading("ntkcheck kernel summary", 1),
        "",
        f"Device: {name}; torch {torch.__version__}; TF32 {torch.backends.cuda.matmul.allow_tf32}.",
        "",
    ]
    lines += table(
        ["architecture", "N", "dtype", "max rel. disagreement of methods", "layerwise (s)", "jacobian (s)", "speed-up"],
        [
            [
                code(r.architecture),
                r.n,
                r.dtype,
                f"{r.max_disagreement:.2e}",
                f"{r.layerwise_s:.4f}",
                f"{r.jacobian_s:.4f}",
                f"{r.jacobian_s / r.layerwise_s:.1f}x",
            ]
            for r in rows
        ],
    )
    with staged(Path(out)) as stage:
        return stage.write_text("summary.md", document(lines))
