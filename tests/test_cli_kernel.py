"""``ntkcheck kernel``: the NTK of a saved model written tile by tile, its bad arguments, and under torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntkcheck.cli import main


def _kernel_files(tmp_path: Path):
    import numpy as np
    import torch

    import ntkcheck as nk

    g = torch.Generator().manual_seed(5)
    model = nk.MLP(4, [16, 16], 2, activation="tanh", generator=g, dtype=torch.float64)
    x = torch.randn(23, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(9, 4, generator=g, dtype=torch.float64)
    torch.save(model, tmp_path / "model.pt")
    np.save(tmp_path / "x.npy", x.numpy())
    torch.save(x2, tmp_path / "x2.pt")
    return model, x, x2


def _assert_kernel_file(path: Path, want) -> None:
    import numpy as np

    got = np.load(path)
    rel = float(np.abs(got - want.numpy()).max() / want.abs().max())
    assert got.shape == tuple(want.shape) and rel <= 1e-12, f"{path.name}: shape {got.shape}, rel. difference {rel}"


def test_kernel_writes_the_ntk_of_a_saved_model(tmp_path, capsys):
    import ntkcheck as nk

    model, x, x2 = _kernel_files(tmp_path)
    out = tmp_path / "K.npy"
    assert (
        main(
            [
                "kernel",
                str(tmp_path / "model.pt"),
                str(tmp_path / "x.npy"),
                "--out",
                str(out),
                "--memory-budget",
                "40KiB",
                "--quiet",
            ]
        )
        == 0
    )
    _assert_kernel_file(out, nk.ntk(model, x))
    assert "tiles of" in capsys.readouterr().out and not list(tmp_path.glob("K.npy.*"))
    assert (
        main(
            [
                "kernel",
                str(tmp_path / "model.pt"),
                str(tmp_path / "x.npy"),
                "--x2",
                str(tmp_path / "x2.pt"),
                "--out",
                str(tmp_path / "K2.npy"),
                "--output",
                "trace",
                "--quiet",
            ]
        )
        == 0
    )
    _assert_kernel_file(tmp_path / "K2.npy", nk.ntk(model, x, x2, output="trace"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-budget", "64 parsecs"], "--memory-budget must be a size"),
        (["--x2", "missing.npy"], "--x2 missing.npy: no such file"),
        (["--dtype", "float16"], "--dtype"),
    ],
)
def test_kernel_bad_arguments_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    _kernel_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["kernel", "model.pt", "x.npy", "--out", "K.npy", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntkcheck kernel: error:") and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("K.npy*"))


def test_kernel_refuses_a_file_that_is_not_a_module(tmp_path, capsys):
    _kernel_files(tmp_path)
    assert main(["kernel", str(tmp_path / "x2.pt"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "K.npy")]) == 2
    assert "must hold a whole module saved with torch.save(model, path), got a Tensor" in capsys.readouterr().err


def test_kernel_under_torchrun_shares_the_tiles(tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys

    import ntkcheck as nk

    model, x, _ = _kernel_files(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ntkcheck.cli",
        "kernel",
        "model.pt",
        "x.npy",
        "--out",
        "K.npy",
        "--memory-budget",
        "40KiB",
        "--quiet",
    ]
    launcher = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = launcher.communicate(timeout=180)
    finally:
        if launcher.poll() is None:  # the launcher and its workers share its session
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    assert launcher.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("wrote")]
    assert len(lines) == 1, f"rank 0 alone must report: {out}"
    tiles, computed = map(int, re.search(r"(\d+) tiles of .* (\d+) computed by this process", lines[0]).groups())
    assert 0 < computed < tiles, f"rank 0 computed {computed} of {tiles} tiles: the ranks must share them"
    assert len(list(tmp_path.glob("K.npy*"))) == 1, "only the kernel file must remain"
    _assert_kernel_file(tmp_path / "K.npy", nk.ntk(model, x))
