"""ntk_to_file: the kernel written tile by tile, a run killed midway and resumed, and refusals to resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import ntkcheck as nk
from ntkcheck.kernels.out_of_core import TILE_SHARE, plan_tile
from ntkcheck.kernels.tile_record import sidecar_paths

REL_TOL = 1e-12
"""float64: tiles are ntk calls on row blocks, so only the order of rounding differs from one call."""
KILL_TIMEOUT_S = 120

# The model and inputs of the kill test, run both in a child process and here.  The model stalls (the child)
# or raises (here) when its batch holds the marked last row of x, so a run stops at the first tile that
# touches the last row block: with 40 rows in tiles of 5, after the 7 tiles (0, 0) .. (0, 6).
PROBLEM = r'''
import time
import torch
from torch import nn
import ntkcheck as nk

MARK = 42.0
N, TILE = 40, 5


class Stopping(nn.Module):
    """An MLP that, while ``stop`` is set, sleeps ("sleep") or raises ("raise") on a batch holding a marked row."""

    def __init__(self, net, stop=None):
        super().__init__()
        self.net = net
        self.stop = stop

    def forward(self, x):
        if self.stop and bool((x[:, 0] == MARK).any()):
            if self.stop == "sleep":
                time.sleep(600)
            raise RuntimeError("the marked row")
        return self.net(x)


def problem(stop=None):
    g = torch.Generator().manual_seed(7)
    net = nk.MLP(3, [16, 16], 1, activation="tanh", bias_std=0.2, generator=g, dtype=torch.float64)
    x = torch.randn(N, 3, generator=g, dtype=torch.float64)
    x[-1, 0] = MARK
    return Stopping(net, stop), x
'''
CHILD = (
    PROBLEM
    + r"""
import sys
torch.set_num_threads(1)
model, x = problem("sleep")
nk.ntk_to_file(model, x, path=sys.argv[1], tile=TILE, progress=False)
"""
)
_ns: dict = {}
exec(compile(PROBLEM, "<PROBLEM>", "exec"), _ns)
problem, TILE, N = _ns["problem"], _ns["TILE"], _ns["N"]
BLOCKS = -(-N // TILE)
TILES = BLOCKS * (BLOCKS + 1) // 2
STOPPED_AFTER = BLOCKS - 1


@contextmanager
def one_thread():
    """One intra-op thread, as in the child, so that both compute with the same summation order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _recorded(path: Path) -> int:
    bits = sidecar_paths(path)[2]
    return int(np.count_nonzero(np.load(bits))) if bits.exists() else 0


def _assert_close(got: np.ndarray, want: torch.Tensor, what: str) -> None:
    assert got.shape == tuple(want.shape), f"{what}: shape {got.shape}, expected {tuple(want.shape)}"
    rel = float(np.abs(got - want.numpy()).max() / want.abs().max())
    assert rel <= REL_TOL, f"{what}: max relative difference {rel:.3g} from ntk > {REL_TOL}"


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed (SIGKILL) while computing a tile, after STOPPED_AFTER tiles were recorded."""
    folder = tmp_path_factory.mktemp("killed")
    path = folder / "K.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while _recorded(path) < STOPPED_AFTER:
            if child.poll() is not None:
                pytest.fail(f"the run ended (status {child.returncode}) before it was killed: {child.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{_recorded(path)} tiles recorded after {KILL_TIMEOUT_S} s")
            time.sleep(0.02)
        assert child.poll() is None, "the run must still be running when it is killed"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    return path


def _copy(killed: Path, folder: Path) -> Path:
    for f in killed.parent.iterdir():
        shutil.copy2(f, folder / f.name)
    return folder / killed.name


def test_killed_run_leaves_no_file_that_looks_complete(killed):
    assert not killed.exists(), "the kernel file must appear only when complete"
    partial, record, _ = sidecar_paths(killed)
    assert partial.exists() and record.exists()
    assert _recorded(killed) == STOPPED_AFTER, f"{_recorded(killed)} tiles recorded, expected {STOPPED_AFTER}"


def test_resumed_run_ends_with_the_bytes_of_an_uninterrupted_one(killed, tmp_path):
    path = _copy(killed, tmp_path)
    model, x = problem()
    with one_thread():
        resumed = nk.ntk_to_file(model, x, path=path, tile=TILE, progress=False)
        whole = nk.ntk_to_file(model, x, path=tmp_path / "whole.npy", tile=TILE, progress=False)
    assert (resumed.tiles, whole.tiles) == (TILES, TILES)
    assert resumed.done_before == STOPPED_AFTER and resumed.computed == TILES - STOPPED_AFTER, resumed
    assert whole.done_before == 0 and whole.computed == TILES, whole
    assert path.read_bytes() == (tmp_path / "whole.npy").read_bytes(), "resumed and uninterrupted files differ"
    assert not any(p.exists() for p in sidecar_paths(path)), "the sidecar files must be gone"
    _assert_close(np.load(path), nk.ntk(model.net, x), "the resumed kernel")


@pytest.mark.parametrize("change", ["x1", "model", "dtype", "output", "x2", "tile"])
def test_other_arguments_refuse_to_resume(killed, tmp_path, change):
    path = _copy(killed, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    model, x = problem()
    kwargs: dict = {"tile": TILE}
    x2 = None
    if change == "x1":
        x = x.clone()
        x[5, 2] += 1e-12
    elif change == "model":
        with torch.no_grad():
            model.net.layers[0].weight[0, 0] += 1e-12
    elif change == "dtype":
        model, x = model.float(), x.float()
    elif change == "output":
        kwargs["output"] = "trace"
    elif change == "x2":
        x2 = x[:10].clone()
    elif change == "tile":
        kwargs["tile"] = TILE + 1
    field = {"x1": "x1", "model": "model", "dtype": "dtype", "output": "output", "x2": "x2", "tile": "tile"}[change]
    with pytest.raises(ValueError, match=rf"cannot resume writing .*{field}"):
        nk.ntk_to_file(model, x, x2, path=path, progress=False, **kwargs)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before, "a refused resumption must leave the files of the interrupted run as they were"


def test_error_midway_keeps_the_record_and_the_next_run_resumes(tmp_path):
    path = tmp_path / "K.npy"
    model, x = problem("raise")
    with pytest.raises(RuntimeError, match="the marked row"):
        nk.ntk_to_file(model, x, path=path, tile=TILE, progress=False)
    assert not path.exists() and _recorded(path) == STOPPED_AFTER
    model.stop = None
    done = nk.ntk_to_file(model, x, path=path, tile=TILE, progress=False)
    assert done.done_before == STOPPED_AFTER and done.computed == TILES - STOPPED_AFTER
    _assert_close(np.load(path), nk.ntk(model.net, x), "the kernel after an error and a rerun")


def test_memory_budget_sets_the_tile(tmp_path):
    g = torch.Generator().manual_seed(3)
    model = nk.MLP(4, [8], 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(33, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(21, 4, generator=g, dtype=torch.float64)
    fixed = sum(t.numel() * 8 for t in [x1, x2, *model.parameters()])
    budget = fixed + 40_000
    done = nk.ntk_to_file(model, x1, x2, path=tmp_path / "K.npy", memory_budget=budget, progress=False)
    pair = 4 * 8  # (O, O) = (2, 2) float64 entries per pair of rows
    assert done.tile**2 * pair * TILE_SHARE <= budget - fixed, f"tile {done.tile} too large for the budget"
    assert done.tile < 21 and done.tiles == -(-33 // done.tile) * -(-21 // done.tile) > 1
    _assert_close(np.load(tmp_path / "K.npy"), nk.ntk(model, x1, x2), "the (N1, N2, O, O) kernel")
    bigger = plan_tile(33, 21, pair, fixed + 160_000, fixed)[0]
    assert bigger > done.tile, "four times the budget must give larger tiles"
    with pytest.raises(nk.KernelMemoryError, match="memory_budget"):
        nk.ntk_to_file(model, x1, x2, path=tmp_path / "K2.npy", memory_budget=fixed + 10, progress=False)
    assert not list(tmp_path.glob("K2.npy*"))


def test_a_finished_file_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    path = tmp_path / "K.npy"
    model, x = problem("raise")
    np.save(path, np.arange(3.0))
    with pytest.raises(RuntimeError, match="the marked row"):
        nk.ntk_to_file(model, x, path=path, tile=TILE, progress=False)
    assert np.array_equal(np.load(path), np.arange(3.0)), "the previous file must stay as it was"
    record = json.loads(sidecar_paths(path)[1].read_text())
    assert record["shape"] == [N, N] and record["tile"] == TILE and record["dtype"] == "float64"


def test_bad_arguments_are_named(tmp_path):
    model, x = problem()
    with pytest.raises(TypeError, match="path"):
        nk.ntk_to_file(model, x, path=3)  # type: ignore[arg-type]
    with pytest.raises(IsADirectoryError, match="directory"):
        nk.ntk_to_file(model, x, path=tmp_path)
    with pytest.raises(ValueError, match="memory_budget"):
        nk.ntk_to_file(model, x, path=tmp_path / "K.npy", memory_budget=0)
    with pytest.raises(ValueError, match="x1"):
        nk.ntk_to_file(model, x[:0], path=tmp_path / "K.npy")
