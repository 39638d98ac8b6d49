"""The public API's conventions, checked on everything ``ntkcheck.__all__`` exports.

- Solvers (every public function whose first parameter is ``k_train``) take the train kernel and the
  targets positionally and everything else keyword-only, in one order: ``k_test_train``, the initial
  outputs ``h_ini_train`` / ``h_ini_test``, the time (``times`` or ``steps``), ``lr``, then the rest.
- Result types (the classes public functions return, other than modules and kernel operators, and the public
  dataclasses) are frozen dataclasses.
- A device or dtype mismatch raises ``ValueError`` naming both sides.
- No module of the package shares its name with a public name (``import ntkcheck.x`` is never a function).
- ``import ntkcheck`` imports neither ``scipy.integrate`` nor ``matplotlib``.
"""

from __future__ import annotations

import dataclasses
import inspect
import pkgutil
import subprocess
import sys
import typing
from collections.abc import Callable

import pytest
import torch
from scipy.sparse.linalg import LinearOperator

import ntkcheck as nk

PUBLIC = {name: getattr(nk, name) for name in nk.__all__}
FUNCTIONS = {name: obj for name, obj in PUBLIC.items() if inspect.isfunction(obj)}
SOLVER_ORDER = ("k_test_train", "h_ini_train", "h_ini_test", "times", "steps", "lr")
SOLVERS = {
    "interpolate",
    "decompose",
    "mse_flow",
    "mse_gd",
    "ode_flow",
    "cg_interpolate",
    "krylov_mse_flow",
    "gp_inference",
    "ensemble_predict",
}


def _solvers() -> dict[str, Callable[..., object]]:
    return {name: f for name, f in FUNCTIONS.items() if next(iter(inspect.signature(f).parameters)) == "k_train"}


def test_every_exported_name_exists_and_is_documented():
    assert len(set(nk.__all__)) == len(nk.__all__), "ntkcheck.__all__ lists a name twice"
    undocumented = [
        name
        for name, obj in PUBLIC.items()
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj)
    ]
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_the_solvers_are_found_by_their_first_parameter():
    assert SOLVERS <= set(_solvers()), f"not taking k_train first: {sorted(SOLVERS - set(_solvers()))}"


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solver_keyword_order(name: str):
    params = list(inspect.signature(FUNCTIONS[name]).parameters.values())
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert positional == ["k_train", "y_train"], (
        f"{name}: positional parameters {positional}, expected k_train, y_train"
    )
    keywords = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    ordered = [k for k in keywords if k in SOLVER_ORDER]
    assert ordered == sorted(ordered, key=SOLVER_ORDER.index), f"{name}: keyword order {ordered}"
    assert keywords[: len(ordered)] == ordered, f"{name}: {keywords} puts other keywords before {ordered}"


def _returned_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for name, f in FUNCTIONS.items():
        hint = typing.get_type_hints(f, localns=vars(nk)).get("return")
        for cls in typing.get_args(hint) or (hint,):
            if (
                inspect.isclass(cls)
                and cls.__module__.startswith("ntkcheck")
                and not issubclass(cls, (torch.nn.Module, BaseException, LinearOperator))
            ):
                found[f"{name} -> {cls.__name__}"] = cls
    for name, obj in PUBLIC.items():
        if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
            found[name] = obj
    return found


def test_result_types_are_frozen_dataclasses():
    results = _returned_classes()
    assert len(results) >= 10, f"too few result types found: {sorted(results)}"
    bad = {
        where: cls.__name__
        for where, cls in results.items()
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen)
    }  # type: ignore[attr-defined]
    assert not bad, f"result types that are not frozen dataclasses: {bad}"


def _mlp(dtype: torch.dtype) -> torch.nn.Module:
    return nk.MLP(3, [8], generator=torch.Generator().manual_seed(0), dtype=dtype)


def _k_and_y(dtype_k: torch.dtype, dtype_y: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    return (a @ a.T + 5 * torch.eye(5, dtype=torch.float64)).to(dtype_k), torch.randn(5, 1, generator=g).to(dtype_y)


def _x(dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=dtype)


MISMATCHES: dict[str, Callable[[], object]] = {
    "ntk": lambda: nk.ntk(_mlp(torch.float64), _x(torch.float32)),
    "ntk x2": lambda: nk.ntk(_mlp(torch.float64), _x(torch.float64), _x(torch.float32)),
    "jacobian": lambda: nk.jacobian(_mlp(torch.float64), _x(torch.float32)),
    "analytic_ntk x2": lambda: nk.analytic_ntk(_mlp(torch.float64), _x(torch.float64), _x(torch.float32)),
    "ntk_operator": lambda: nk.ntk_operator(_mlp(torch.float64), _x(torch.float32)),
    "interpolate": lambda: nk.interpolate(*_k_and_y(torch.float64, torch.float32)),
    "mse_flow": lambda: nk.mse_flow(*_k_and_y(torch.float64, torch.float32), times=[1.0]),
    "ode_flow": lambda: nk.ode_flow(*_k_and_y(torch.float64, torch.float32), times=[1.0], loss=nk.MSE),
    "train": lambda: nk.train(
        _mlp(torch.float64), _x(torch.float32), torch.zeros(4, 1, dtype=torch.float32), nk.MSE, steps=1, lr=0.1
    ),
}


@pytest.mark.parametrize("entry", sorted(MISMATCHES))
def test_a_dtype_mismatch_is_a_value_error_naming_both(entry: str):
    with pytest.raises(ValueError) as info:
        MISMATCHES[entry]()
    assert "float32" in str(info.value) and "float64" in str(info.value), str(info.value)


def _ntk_on_meta() -> object:
    return nk.ntk(_mlp(torch.float64), _x(torch.float64).to("meta"))


def _interpolate_on_meta() -> object:
    k, y = _k_and_y(torch.float64, torch.float64)
    return nk.interpolate(k, y.to("meta"))


@pytest.mark.parametrize("call", [_ntk_on_meta, _interpolate_on_meta], ids=["ntk", "interpolate"])
def test_a_device_mismatch_is_a_value_error_naming_both(call: Callable[[], object]):
    with pytest.raises(ValueError) as info:
        call()
    assert "meta" in str(info.value) and "cpu" in str(info.value), str(info.value)


def test_no_module_is_named_like_a_public_name():
    modules = {m.name.rpartition(".")[2] for m in pkgutil.walk_packages(nk.__path__, "ntkcheck.")}
    assert not modules & set(nk.__all__), f"modules named like public names: {sorted(modules & set(nk.__all__))}"


def test_importing_ntkcheck_loads_neither_scipy_integrate_nor_matplotlib():
    probe = (
        "import sys, ntkcheck; heavy = [m for m in sys.modules if m == 'scipy.integrate' "
        "or m.split('.')[0] == 'matplotlib']; print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, f"import ntkcheck loaded {done.stdout.strip()} {done.stderr[-500:]}"
