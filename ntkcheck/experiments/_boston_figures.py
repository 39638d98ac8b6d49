"""The panels of seed 000 Fig 3 from one seed of the Boston experiment: (a) the eq (6) scatter, (b) the losses.

``run`` is one seed's dict from :mod:`ntkcheck.experiments.boston`: test outputs of the trained
networks and of eq (6), their training histories and the linear (NTK) dynamics on the same grid.
"""

from __future__ import annotations

from typing import Any


def scatter(run: dict[str, Any]) -> Any:
    """Fig 3a: eq (6)'s RHS and ASI's output against the trained original network on the test houses."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 5))
    ax = fig.subplots()
    a, r, ri, b = (run[k].detach().cpu().numpy() for k in ("out", "rhs", "rhs_inf", "out_asi"))
    ax.scatter(a, ri, s=8, c="lightgray", label="eq (6) at t = inf, kernel (not in the paper)")
    ax.scatter(a, b, s=12, c="tab:blue", label="ASI network, h_k(x; 0, X, Y)")
    ax.scatter(a, r, s=12, c="tab:red", label="RHS of eq (6), trained networks")
    lo, hi = float(min(a.min(), r.min(), b.min())), float(max(a.max(), r.max(), b.max()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=1)
    ax.set_xlabel("h_k(x; h_ini, X, Y): original network, trained (test houses)")
    ax.set_ylabel("prediction")
    ax.set_title(f"(a) Boston, seed {run['seed']}: eq (6) vs the trained network")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def losses(run: dict[str, Any]) -> Any:
    """Fig 3b: training and test MSE of the original and ASI networks, with their linear (NTK) dynamics."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    styles = {"original": ("tab:blue", "tab:red"), "ASI": ("black", "gold")}
    for label in ("original", "ASI"):
        c_train, c_test = styles[label]
        h = run["runs"][label].history
        ax.semilogy(h.steps, h.train_loss, "-", c=c_train, label=f"{label}: train")
        ax.semilogy(h.steps, h.test_loss, "--", c=c_test, label=f"{label}: test")
    for fl, c in ((run["flow"], "tab:blue"), (run["flow_asi"], "black")):
        ax.semilogy(run["grid"], ((fl.train - run["y"]) ** 2).mean(dim=1).cpu().numpy(), ":", c=c, lw=0.8)
        ax.semilogy(run["grid"], ((fl.test - run["yt"]) ** 2).mean(dim=1).cpu().numpy(), ":", c=c, lw=0.8)
    ax.plot([], [], "k:", lw=0.8, label="linear (NTK) dynamics")
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel("MSE")
    ax.set_title("(b) Boston: losses")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
