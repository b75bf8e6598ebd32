"""Figures and error statistics of fitted models (PNG via matplotlib's Agg backend, JSON-able dicts).

* :func:`parity_plot` -- model against reference energies, train and test (Fig. 8a)
* :func:`binned_errors` / :func:`error_bins_plot` -- RMSE per 25 meV/f.u. bin of the lowest 125 meV (Fig. 8b)
* :func:`cv_grid_plot` -- mean and spread of train/validation RMSE per setting (Fig. 7)
* :func:`path_plot` -- energies along paths, model against the reference calculator (Fig. 9)
* :func:`learning_curve_plot` -- test RMSE against training-set size
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MEV = 1000.0


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rmse(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def error_stats(pred, ref, n_atoms, n_fu=None, window_mev_per_fu: float = 125.0, e_min_per_fu=None) -> dict:
    """RMSE and MAE (meV/atom) overall and within ``window`` meV/f.u. of the lowest energy."""
    pred, ref, n_atoms = np.asarray(pred, float), np.asarray(ref, float), np.asarray(n_atoms, float)
    n_fu = n_atoms / 5.0 if n_fu is None else np.asarray(n_fu, float)
    err = (pred - ref) / n_atoms * MEV
    per_fu = ref / n_fu
    lo = per_fu.min() if e_min_per_fu is None else e_min_per_fu
    low = (per_fu - lo) * MEV <= window_mev_per_fu
    return {
        "n": int(err.size),
        "rmse_mev_per_atom": float(np.sqrt(np.mean(err**2))) if err.size else float("nan"),
        "mae_mev_per_atom": float(np.mean(np.abs(err))) if err.size else float("nan"),
        "max_mev_per_atom": float(np.max(np.abs(err))) if err.size else float("nan"),
        "n_low": int(low.sum()),
        "rmse_low_mev_per_atom": float(np.sqrt(np.mean(err[low] ** 2))) if low.any() else float("nan"),
    }


def per_kind_stats(pred, ref, n_atoms, kinds, e_min_per_fu=None) -> dict:
    kinds = np.asarray([str(k) for k in kinds])
    return {
        k: error_stats(np.asarray(pred)[kinds == k], np.asarray(ref)[kinds == k], np.asarray(n_atoms)[kinds == k], e_min_per_fu=e_min_per_fu)
        for k in sorted(set(kinds))
    }


def binned_errors(pred, ref, n_atoms, bin_mev_per_fu: float = 25.0, top_mev_per_fu: float = 125.0, e_min_per_fu=None) -> list[dict]:
    """RMSE (meV/atom) per energy bin (meV/f.u. above the lowest energy) up to ``top``."""
    pred, ref, n_atoms = np.asarray(pred, float), np.asarray(ref, float), np.asarray(n_atoms, float)
    per_fu = ref / (n_atoms / 5.0)
    lo = per_fu.min() if e_min_per_fu is None else e_min_per_fu
    above = (per_fu - lo) * MEV
    err = (pred - ref) / n_atoms * MEV
    edges = np.arange(0.0, top_mev_per_fu + 1e-9, bin_mev_per_fu)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (above >= a) & ((above < b) if b < edges[-1] else (above <= b))
        out.append({"lo": float(a), "hi": float(b), "n": int(sel.sum()), "rmse_mev_per_atom": float(np.sqrt(np.mean(err[sel] ** 2))) if sel.any() else None})
    return out


def parity_plot(path, train: tuple, test: tuple | None, n_atoms_train, n_atoms_test=None, title: str = "") -> Path:
    """``train``/``test`` = (reference energies, predicted energies) in eV; axes in eV/atom."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    sets = [("train", train, n_atoms_train, "tab:green")]
    if test is not None:
        sets.append(("test", test, n_atoms_test, "tab:red"))
    lo, hi = np.inf, -np.inf
    # energies per atom relative to the lowest reference energy, in meV/atom (readable tick labels)
    e_min = min(float(np.min(np.asarray(ref) / np.asarray(na))) for _n, (ref, _p), na, _c in sets)
    for name, (ref, pred), na, col in sets:
        r = (np.asarray(ref) / np.asarray(na) - e_min) * MEV
        p = (np.asarray(pred) / np.asarray(na) - e_min) * MEV
        e = rmse(p, r)
        ax.scatter(r, p, s=6, alpha=0.6, color=col, label=f"{name} (RMSE {e:.2f} meV/atom)")
        lo, hi = min(lo, r.min(), p.min()), max(hi, r.max(), p.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("reference energy above the lowest (meV/atom)")
    ax.set_ylabel("model energy above the lowest reference (meV/atom)")
    ax.set_title(f"{title or 'parity'}\nlowest reference energy {e_min:.4f} eV/atom", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def error_bins_plot(path, bins_train: list[dict], bins_test: list[dict], rmse_train=None, rmse_test=None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    centers = np.array([(b["lo"] + b["hi"]) / 2 for b in bins_test])
    width = (bins_test[0]["hi"] - bins_test[0]["lo"]) * 0.4 if bins_test else 10
    val = lambda bins: [b["rmse_mev_per_atom"] if b["rmse_mev_per_atom"] is not None else 0.0 for b in bins]  # noqa: E731
    ax.bar(centers - width / 2, val(bins_train), width, color="tab:green", label="train")
    ax.bar(centers + width / 2, val(bins_test), width, color="tab:red", label="test")
    for c, b in zip(centers, bins_test):
        ax.annotate(str(b["n"]), (c + width / 2, val([b])[0]), ha="center", va="bottom", fontsize=7)
    if rmse_test is not None:
        ax.axhline(rmse_test, color="tab:red", ls="--", lw=1, label="test RMSE (all)")
    if rmse_train is not None:
        ax.axhline(rmse_train, color="tab:green", ls="--", lw=1, label="train RMSE (all)")
    ax.set_xlabel("energy above the lowest configuration (meV/f.u.)")
    ax.set_ylabel("RMSE (meV/atom)")
    ax.set_title("error per energy bin (numbers: test configurations)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def cv_grid_plot(path, table: list[dict], best: int | None = None) -> Path:
    """One point per setting: mean +- std of train and validation RMSE (meV/atom), Fig. 7 style."""
    plt = _plt()
    n = len(table)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * n + 2), 4.5))
    x = np.arange(n)
    ax.errorbar(x - 0.1, [r["train_rmse_mean"] for r in table], yerr=[r["train_rmse_std"] for r in table], fmt="o", color="tab:green", label="train", ms=4, capsize=2)
    ax.errorbar(x + 0.1, [r["val_rmse_mean"] for r in table], yerr=[r["val_rmse_std"] for r in table], fmt="s", color="tab:blue", label="validation (CV)", ms=4, capsize=2)
    if best is not None:
        ax.plot([best + 0.1], [table[best]["val_rmse_mean"]], "o", mfc="none", mec="k", ms=12, label="selected")
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in table], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("RMSE (meV/atom)")
    ax.set_yscale("log")
    ax.set_title("cross-validation over the hyperparameter grid")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def path_plot(path, paths: dict) -> Path:
    """``paths[name] = {"x": [...], "reference": [...], "models": {label: [...]}, "xlabel": str}`` (meV/f.u.)."""
    plt = _plt()
    names = list(paths)
    ncol = min(2, len(names)) or 1
    nrow = int(np.ceil(len(names) / ncol)) or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        p = paths[name]
        ax.plot(p["x"], p["reference"], "ko", ms=4, label="reference calculator")
        for label, y in p["models"].items():
            ax.plot(p["x"], y, "-", lw=1.5, label=label)
        ax.set_title(name)
        ax.set_xlabel(p.get("xlabel", "path coordinate"))
        ax.set_ylabel("E - E(cubic) (meV/f.u.)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def learning_curve_plot(path, curve: dict) -> Path:
    """``curve[label] = {"n_train": [...], "test_rmse": [...]}`` (meV/atom)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, c in curve.items():
        ax.plot(c["n_train"], c["test_rmse"], "o-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training configurations")
    ax.set_ylabel("test RMSE (meV/atom)")
    ax.set_title("learning curve")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
