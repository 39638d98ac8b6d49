"""Infinite-width kernels by neural-tangents' stax, for the cross-check; run in a python that has neural-tangents.

Reads one JSON request per line on stdin, writes one JSON answer per line on stdout:

* request ``{"layers": [...], "x1": nested list, "x2": nested list or null}`` with inputs
  channel-last ((N, d), (N, L, C) or (N, H, W, C)) and float64 values;
* answer ``{"nngp": [[...]], "ntk": [[...]]}`` (N1 x N2, float64), or ``{"error": "..."}``.

A layer is a dict with ``"type"``:

* ``"dense"``: ``out``, ``W_std``, ``b_std`` (null: no bias), ``parameterization``;
* ``"conv"``: the same and ``filter``, ``strides``, ``padding`` (``"SAME"`` / ``"VALID"``);
* ``"act"``: ``name`` in relu, erf, gelu (closed forms) or tanh (Gauss-Hermite, ``deg`` nodes);
* ``"layer_norm"``: ``eps`` (over the channel axis, the last);
* ``"scale"``: multiply by the constant ``value``;
* ``"residual"``: ``branch`` (a list of layers): ``h + branch(h)``;
* ``"gap"`` and ``"flatten"``: the readouts.

Floats travel as JSON numbers (Python writes the shortest repr, which reads back exactly).
This file imports neither torch nor ntkcheck: it is the other side of the comparison.
"""

from __future__ import annotations

import json
import sys
import types
import warnings

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402


def _activation(spec: dict) -> object:
    name = spec["name"]
    if name == "relu":
        return stax.Relu()
    if name == "erf":
        return stax.Erf()
    if name == "gelu":
        return stax.Gelu(approximate=False)
    if name == "tanh":
        return stax.ElementwiseNumerical(jnp.tanh, deg=int(spec["deg"]), df=lambda x: 1 - jnp.tanh(x) ** 2)
    raise ValueError(f"unknown activation {name!r}")


def build(layers: list[dict]) -> object:
    """The stax ``serial`` of ``layers`` (see the module docstring)."""
    out = []
    for spec in layers:
        kind = spec["type"]
        if kind == "dense":
            out.append(
                stax.Dense(
                    spec["out"], W_std=spec["W_std"], b_std=spec["b_std"], parameterization=spec["parameterization"]
                )
            )
        elif kind == "conv":
            out.append(
                stax.Conv(
                    spec["out"],
                    tuple(spec["filter"]),
                    strides=tuple(spec["strides"]),
                    padding=spec["padding"],
                    W_std=spec["W_std"],
                    b_std=spec["b_std"],
                    parameterization=spec["parameterization"],
                )
            )
        elif kind == "act":
            out.append(_activation(spec))
        elif kind == "layer_norm":
            out.append(stax.LayerNorm(axis=-1, eps=spec["eps"]))
        elif kind == "scale":
            out.append(stax.DotGeneral(rhs=float(spec["value"])))
        elif kind == "residual":
            out.append(
                stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), build(spec["branch"])), stax.FanInSum())
            )
        elif kind == "gap":
            out.append(stax.GlobalAvgPool())
        elif kind == "flatten":
            out.append(stax.Flatten())
        else:
            raise ValueError(f"unknown layer type {kind!r}")
    return stax.serial(*out)


def answer(request: dict) -> dict:
    _, _, kernel_fn = build(request["layers"])
    x1 = np.asarray(request["x1"], dtype=np.float64)
    x2 = None if request.get("x2") is None else np.asarray(request["x2"], dtype=np.float64)
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    return {"nngp": np.asarray(k.nngp, dtype=np.float64).tolist(), "ntk": np.asarray(k.ntk, dtype=np.float64).tolist()}


def main() -> None:
    # ElementwiseNumerical warns on every construction that its accuracy depends on deg: the
    # cross-check chooses deg and measures that accuracy itself.
    warnings.filterwarnings("ignore", message="Numerical Activation Layer", category=UserWarning)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = answer(json.loads(line))
        except Exception as err:  # reported to the caller, which fails the test with it
            reply = {"error": f"{type(err).__name__}: {err}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
