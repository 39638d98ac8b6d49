"""distributed_ntk on two gloo ranks (CPU processes) against the single-process kernel.

One spawn of two ranks runs every case (process start-up dominates the cost) and saves
what each rank got; the tests compare it with ``ntk`` computed here, in float64.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ntkcheck as nk
from ntkcheck.kernels.tile_grid import Tile, assign, default_tile, row_shares, tile_grid

WORLD = 2
TILE = 4
REL_TOL = 1e-12
"""float64: tiles are ntk calls on row blocks, so only the order of rounding differs from one call."""
SPAWN_TIMEOUT_S = 180
CASES = ["mlp-sym", "mlp-x2", "cnn-sym", "cnn-x2"]


def _problems() -> dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]]:
    """The models and inputs of every case, from fixed seeds (the same on every rank and in the parent)."""
    g = torch.Generator().manual_seed(1234)
    mlp = nk.MLP(3, [12, 12], 2, activation="tanh", bias_std=0.3, generator=g, dtype=torch.float64)
    x = torch.randn(19, 3, generator=g, dtype=torch.float64)
    x2 = torch.randn(10, 3, generator=g, dtype=torch.float64)
    cnn = nk.CNN(1, [3], 1, kernel_size=3, generator=g, dtype=torch.float64)
    xc = torch.randn(9, 1, 5, 5, generator=g, dtype=torch.float64)
    xc2 = torch.randn(6, 1, 5, 5, generator=g, dtype=torch.float64)
    return {"mlp-sym": (mlp, x, None), "mlp-x2": (mlp, x, x2), "cnn-sym": (cnn, xc, None), "cnn-x2": (cnn, xc, xc2)}


def _worker(rank: int, folder: str) -> None:
    """One rank: every case with each result kind, then the mismatch cases; saves what it got."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    got: dict[str, object] = {}
    try:
        for case, (model, x1, x2) in _problems().items():
            got[f"{case}/gather"] = nk.distributed_ntk(model, x1, x2, tile=TILE, result="gather")
            block = nk.distributed_ntk(model, x1, x2, tile=TILE, result="rows")
            got[f"{case}/rows"] = (block.kernel, block.rows.start, block.rows.stop)
            done = nk.distributed_ntk(model, x1, x2, tile=TILE, result=Path(folder) / f"{case}.npy")
            got[f"{case}/file"] = (done.computed, done.tiles)
        model, x1, _ = _problems()["mlp-sym"]
        got["default-tile/gather"] = nk.distributed_ntk(model, x1)
        for what in ("model", "x1"):
            m, x = _problems()["mlp-sym"][:2]
            if rank == 1 and what == "model":
                with torch.no_grad():
                    next(m.parameters())[0, 0] += 1e-9
            if rank == 1 and what == "x1":
                x = x.clone()
                x[3, 1] += 1e-9
            try:
                nk.distributed_ntk(m, x, tile=TILE)
                got[f"mismatch-{what}"] = "no error"
            except nk.RankMismatchError as exc:
                got[f"mismatch-{what}"] = str(exc)
    except BaseException:
        (Path(folder) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        torch.save(got, Path(folder) / f"rank{rank}.pt")
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("dist")
    ctx = mp.start_processes(_worker, args=(str(folder),), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail(f"the {WORLD} ranks did not finish within {SPAWN_TIMEOUT_S} s (a deadlock?)")
    except mp.ProcessException:
        errors = "\n".join(f"rank {f.stem[4:]}:\n{f.read_text()}" for f in sorted(folder.glob("rank*.error")))
        pytest.fail(f"a rank failed:\n{errors}")
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _reference(case: str) -> torch.Tensor:
    model, x1, x2 = _problems()[case]
    k = nk.ntk(model, x1, x2)
    assert isinstance(k, torch.Tensor)
    return k


def _assert_close(got: torch.Tensor | np.ndarray, want: torch.Tensor, what: str) -> None:
    got_t = torch.as_tensor(got)
    assert got_t.shape == want.shape, f"{what}: shape {tuple(got_t.shape)}, expected {tuple(want.shape)}"
    assert got_t.dtype == torch.float64, f"{what}: dtype {got_t.dtype}"
    rel = float((got_t - want).abs().max() / want.abs().max())
    assert rel <= REL_TOL, f"{what}: max relative difference {rel:.3g} from the single-process ntk > {REL_TOL}"


@pytest.mark.parametrize("case", CASES)
def test_gather_equals_single_process(ranks, case):
    _, got = ranks
    _assert_close(got[0][f"{case}/gather"], _reference(case), f"{case} gathered on rank 0")
    assert got[1][f"{case}/gather"] is None, "ranks other than 0 must get None"


def test_default_tile_gather_equals_single_process(ranks):
    _, got = ranks
    _assert_close(got[0]["default-tile/gather"], _reference("mlp-sym"), "default tile, gathered")


@pytest.mark.parametrize("case", CASES)
def test_rows_are_contiguous_blocks_of_the_kernel(ranks, case):
    _, got = ranks
    want = _reference(case)
    blocks = [got[r][f"{case}/rows"] for r in range(WORLD)]
    assert [b[1] for b in blocks] == [0] + [b[2] for b in blocks[:-1]], f"row ranges {[b[1:] for b in blocks]}"
    assert blocks[-1][2] == want.shape[0], f"the row blocks end at {blocks[-1][2]}, not N1 = {want.shape[0]}"
    assert all(b[2] > b[1] for b in blocks), f"a rank got no rows: {[b[1:] for b in blocks]}"
    for r, (kernel, lo, hi) in enumerate(blocks):
        _assert_close(kernel, want[lo:hi], f"{case} rows {lo}:{hi} on rank {r}")


@pytest.mark.parametrize("case", CASES)
def test_file_result_equals_single_process_and_splits_the_work(ranks, case):
    folder, got = ranks
    _assert_close(np.load(folder / f"{case}.npy"), _reference(case), f"{case} written to a file")
    computed = [got[r][f"{case}/file"][0] for r in range(WORLD)]
    tiles = got[0][f"{case}/file"][1]
    assert sum(computed) == tiles and min(computed) > 0, f"tiles computed per rank {computed} of {tiles}"
    assert not list(folder.glob(f"{case}.npy.*")), "the sidecar files must be gone once the file is complete"


@pytest.mark.parametrize(("what", "named"), [("model", "model parameters"), ("x1", "x1")])
def test_mismatch_between_ranks_raises_on_every_rank(ranks, what, named):
    _, got = ranks
    for r in range(WORLD):
        message = got[r][f"mismatch-{what}"]
        assert message != "no error", f"rank {r} computed a kernel although rank 1's {what} differs"
        assert f"rank 1 differs from rank 0 in {named}" in message, message
        assert "rank 0 differs" not in message


# ---------------------------------------------------------------------------------------------
# the tile grid and the assignment rule (no processes)


def _coverage(n1: int, n2: int, tile: int, symmetric: bool) -> np.ndarray:
    hits = np.zeros((n1, n2), dtype=int)
    for t in tile_grid(n1, n2, tile, symmetric):
        hits[t.r0 : t.r1, t.c0 : t.c1] += 1
        if t.mirrored:
            hits[t.c0 : t.c1, t.r0 : t.r1] += 1
    return hits


@pytest.mark.parametrize(
    ("n1", "n2", "tile", "symmetric"),
    [(19, 19, 4, True), (19, 10, 4, False), (7, 7, 7, True), (5, 9, 2, False), (1, 1, 3, True)],
)
def test_grid_covers_every_entry_once(n1, n2, tile, symmetric):
    hits = _coverage(n1, n2, tile, symmetric)
    assert hits.min() == 1 and hits.max() == 1, f"entries covered {hits.min()} to {hits.max()} times"


@pytest.mark.parametrize(("n", "tile", "world"), [(100, 7, 2), (100, 7, 3), (64, 8, 8), (37, 5, 4)])
def test_assignment_is_a_balanced_partition(n, tile, world):
    tiles = tile_grid(n, n, tile, True)
    owned = assign(tiles, world)
    indices = sorted(t.index for ts in owned for t in ts)
    assert indices == list(range(len(tiles))), "every tile must be assigned exactly once"
    loads = [sum(t.cost for t in ts) for ts in owned]
    biggest = max(t.cost for t in tiles)
    assert max(loads) - min(loads) <= biggest, f"loads {loads} differ by more than one tile ({biggest})"
    assert assign(tiles, world) == owned, "the rule must give the same assignment on every call"


def test_default_tile_gives_work_to_every_rank():
    for n, world in [(19, 2), (1000, 8), (3, 4)]:
        side = default_tile(n, n, True, world)
        count = len(tile_grid(n, n, side, True))
        assert count >= min(4 * world, n * (n + 1) // 2), f"n={n}, world={world}: {count} tiles of side {side}"
        blocks = -(-n // side)
        fewer = -(-n // (blocks - 1)) if blocks > 1 else None
        assert fewer is None or len(tile_grid(n, n, fewer, True)) < 4 * world, f"{blocks - 1} row blocks would do"


def test_row_shares_are_contiguous_and_even():
    for blocks, world in [(5, 2), (2, 3), (16, 8)]:
        shares = row_shares(blocks, world)
        assert [i for s in shares for i in s] == list(range(blocks))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1, shares


def test_diagonal_tile_cost_counts_its_upper_half():
    assert Tile(0, 0, 0, 0, 4, 0, 4, True).cost == 10 and Tile(0, 0, 1, 0, 4, 4, 8, True).cost == 16


def test_without_a_process_group_refuses():
    model, x1, _ = _problems()["mlp-sym"]
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        nk.distributed_ntk(model, x1)


def test_a_misspelt_result_is_refused_not_taken_for_a_file(tmp_path, monkeypatch):
    model, x1, _ = _problems()["mlp-sym"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="result must be 'gather', 'rows' or the path of a .npy file"):
        nk.distributed_ntk(model, x1, result="gahter")
    assert not list(tmp_path.iterdir())
