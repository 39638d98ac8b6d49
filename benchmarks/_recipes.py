"""The torch.func tutorial's two empirical-NTK recipes (the external baseline).

Transcribed from the PyTorch tutorial "Neural Tangent Kernels"
(https://pytorch.org/tutorials/intermediate/neural_tangent_kernels.html): the
Jacobian-contraction recipe and the NTK-vector-product recipe, for a model with
parameters ``params`` evaluated by ``functional_call``.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jacrev, jvp, vjp, vmap


def _fnet_single(model, params, x):
    return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)


def jacobian_contraction(model, x1, x2):
    """Tutorial recipe 1: vmap(jacrev) per-sample Jacobians, then einsum per parameter."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    fn = lambda p, x: _fnet_single(model, p, x)  # noqa: E731
    jac1 = vmap(jacrev(fn), (None, 0))(params, x1)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = vmap(jacrev(fn), (None, 0))(params, x2)
    jac2 = [j.flatten(2) for j in jac2.values()]
    result = torch.stack([torch.einsum("Naf,Mbf->NMab", j1, j2) for j1, j2 in zip(jac1, jac2)])
    return result.sum(0)


def ntk_vector_products(model, x1, x2):
    """Tutorial recipe 2: for every pair (x1_i, x2_j), vjp then jvp per basis vector, doubly vmapped."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def get_ntk(a, b):
        def func_x1(p):
            return _fnet_single(model, p, a)

        def func_x2(p):
            return _fnet_single(model, p, b)

        output, vjp_fn = vjp(func_x2, params)

        def get_ntk_slice(vec):
            vjps = vjp_fn(vec)
            _, jvps = jvp(func_x1, (params,), vjps)
            return jvps

        basis = torch.eye(output.numel(), dtype=output.dtype, device=output.device).view(output.numel(), -1)
        return vmap(get_ntk_slice)(basis)

    return vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)
