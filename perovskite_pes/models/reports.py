"""Figures and error statistics of fitted models (PNG via matplotlib's Agg backend, JSON-able dicts).

* :func:`parity_plot` -- model against reference energies, train and test (Fig. 8a)
* :func:`binned_errors` / :func:`error_bins_plot` -- RMSE per 25 meV/f.u. bin of the lowest 125 meV (Fig. 8b)
* :func:`cv_grid_plot` -- mean and spread of train/validation RMSE per setting (Fig. 7)
* :func:`path_plot` -- energies along paths, model against the reference calculator (Fig. 9)
* :func:`learning_curve_plot` -- test RMSE against training-set size
* :func:`spread_calibration` / :func:`calibration_plot` -- a committee's spread against its error on
  held-out data: Spearman rank correlation and RMS error per spread bin
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import pyplot, save_figure

MEV = 1000.0


def rmse(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def error_stats(pred, ref, n_atoms, n_fu=None, window_mev_per_fu: float = 125.0, e_min_per_fu=None) -> dict:
    """RMSE, MAE and mean signed error (``bias``, model minus reference; meV/atom) overall, and the RMSE
    within ``window`` meV/f.u. of the lowest energy."""
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
        "bias_mev_per_atom": float(np.mean(err)) if err.size else float("nan"),
        "n_low": int(low.sum()),
        "rmse_low_mev_per_atom": float(np.sqrt(np.mean(err[low] ** 2))) if low.any() else float("nan"),
    }


def prediction_errors(model, configs, energies, forces=None) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Errors of ``model`` (model - label) on labelled configurations: energies per atom in meV/atom
    and, when ``forces`` are given, one (n_atoms, 3) array of force errors (eV/A) per configuration."""
    n_atoms = np.array([c.reference.n_atoms for c in configs], dtype=float)
    if forces is None:
        return (np.asarray(model.predict(configs), dtype=float) - np.asarray(energies, float)) / n_atoms * MEV, None
    pred = model.predict_all(configs)
    de = (np.asarray(pred["energy"], dtype=float) - np.asarray(energies, float)) / n_atoms * MEV
    return de, [np.asarray(p) - np.asarray(f) for p, f in zip(pred["forces"], forces)]


def force_rmse(errors) -> float:
    """RMS of every component of a list of force-error arrays (eV/A)."""
    return float(np.sqrt(np.mean(np.concatenate([np.ravel(e) for e in errors]) ** 2)))


def per_kind_stats(pred, ref, n_atoms, kinds, e_min_per_fu=None) -> dict:
    kinds = np.asarray([str(k) for k in kinds])
    return {
        k: error_stats(
            np.asarray(pred)[kinds == k],
            np.asarray(ref)[kinds == k],
            np.asarray(n_atoms)[kinds == k],
            e_min_per_fu=e_min_per_fu,
        )
        for k in sorted(set(kinds))
    }


def binned_errors(
    pred, ref, n_atoms, bin_mev_per_fu: float = 25.0, top_mev_per_fu: float = 125.0, e_min_per_fu=None
) -> list[dict]:
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
        out.append(
            {
                "lo": float(a),
                "hi": float(b),
                "n": int(sel.sum()),
                "rmse_mev_per_atom": float(np.sqrt(np.mean(err[sel] ** 2))) if sel.any() else None,
            }
        )
    return out


def parity_plot(path, train: tuple, test: tuple | None, n_atoms_train, n_atoms_test=None, title: str = "") -> Path:
    """``train``/``test`` = (reference energies, predicted energies) in eV; axes in eV/atom."""
    plt = pyplot()
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
    return save_figure(fig, path)


def error_bins_plot(path, bins_train: list[dict], bins_test: list[dict], rmse_train=None, rmse_test=None) -> Path:
    plt = pyplot()
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
    return save_figure(fig, path)


def cv_grid_plot(path, table: list[dict], best: int | None = None) -> Path:
    """One point per setting: mean +- std of train and validation RMSE (meV/atom), Fig. 7 style."""
    plt = pyplot()
    n = len(table)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * n + 2), 4.5))
    x = np.arange(n)
    ax.errorbar(
        x - 0.1,
        [r["train_rmse_mean"] for r in table],
        yerr=[r["train_rmse_std"] for r in table],
        fmt="o",
        color="tab:green",
        label="train",
        ms=4,
        capsize=2,
    )
    ax.errorbar(
        x + 0.1,
        [r["val_rmse_mean"] for r in table],
        yerr=[r["val_rmse_std"] for r in table],
        fmt="s",
        color="tab:blue",
        label="validation (CV)",
        ms=4,
        capsize=2,
    )
    if best is not None:
        ax.plot([best + 0.1], [table[best]["val_rmse_mean"]], "o", mfc="none", mec="k", ms=12, label="selected")
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in table], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("RMSE (meV/atom)")
    ax.set_yscale("log")
    ax.set_title("cross-validation over the hyperparameter grid")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def path_plot(path, paths: dict) -> Path:
    """``paths[name] = {"x": [...], "reference": [...], "models": {label: [...]}, "xlabel": str}`` (meV/f.u.)."""
    plt = pyplot()
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
    return save_figure(fig, path)


def learning_curve_plot(path, curve: dict) -> Path:
    """``curve[label] = {"n_train": [...], "test_rmse": [...]}`` (meV/atom)."""
    plt = pyplot()
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
    return save_figure(fig, path)


def spread_calibration(spread, error, n_bins: int = 10) -> dict:
    """How well a committee's spread predicts its error on held-out data.

    ``spread`` and ``error`` (signed or absolute, same units) per structure. Returns the Spearman
    rank correlation of spread and |error| (with its p-value), the RMS spread and RMS error, and
    per bin of spread (quantiles, up to ``n_bins`` bins of equal counts): count, spread range,
    RMS spread and RMS error. For a calibrated committee the binned RMS error follows the RMS
    spread; a rank correlation near zero means the spread does not tell good from bad predictions.
    """
    from scipy.stats import spearmanr

    spread = np.asarray(spread, dtype=float).reshape(-1)
    err = np.abs(np.asarray(error, dtype=float).reshape(-1))
    if spread.shape != err.shape:
        raise ValueError(f"spread and error must have one value per structure each; got {spread.size} and {err.size}")
    out = {
        "n": int(spread.size),
        "spearman": None,
        "spearman_p": None,
        "rms_spread": float(np.sqrt(np.mean(spread**2))) if spread.size else None,
        "rms_error": float(np.sqrt(np.mean(err**2))) if err.size else None,
        "bins": [],
    }
    if spread.size >= 3 and np.ptp(spread) > 0 and np.ptp(err) > 0:
        rho, p = spearmanr(spread, err)
        out["spearman"], out["spearman_p"] = float(rho), float(p)
    if not spread.size:
        return out
    order = np.argsort(spread, kind="stable")
    for chunk in np.array_split(order, max(1, min(int(n_bins), spread.size))):
        if not len(chunk):
            continue
        s, e = spread[chunk], err[chunk]
        out["bins"].append(
            {
                "n": int(len(chunk)),
                "spread_lo": float(s.min()),
                "spread_hi": float(s.max()),
                "rms_spread": float(np.sqrt(np.mean(s**2))),
                "rms_error": float(np.sqrt(np.mean(e**2))),
            }
        )
    return out


def calibration_plot(path, panels: dict, n_bins: int = 10) -> Path:
    """One panel per quantity: ``panels[label] = (spread, error)`` per structure (label names the unit).

    Points: |error| against spread per structure; line: RMS error per spread bin against the bin's
    RMS spread; dashed: error = spread (a calibrated committee). Log axes; Spearman's rho in the title.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = pyplot()
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.6), squeeze=False)
    for ax, (label, (spread, error)) in zip(axes.ravel(), panels.items()):
        spread = np.asarray(spread, dtype=float)
        err = np.abs(np.asarray(error, dtype=float))
        # at least 5 structures per bin, so the binned RMS error means something
        stats = spread_calibration(spread, err, max(1, min(int(n_bins), spread.size // 5)))
        pos = (spread > 0) & (err > 0)
        ax.scatter(spread[pos], err[pos], s=6, alpha=0.35, color="tab:gray", label="structures")
        if stats["bins"]:
            ax.plot(
                [b["rms_spread"] for b in stats["bins"]],
                [b["rms_error"] for b in stats["bins"]],
                "o-",
                color="tab:red",
                label="RMS error per spread bin",
            )
        vals = np.concatenate([spread[pos], err[pos]]) if pos.any() else np.array([1e-3, 1.0])
        # structures with (almost) no spread or error (the reference itself) would stretch the axes
        # over many decades: show three decades below the median at most
        lo, hi = max(float(vals.min()), 1e-3 * float(np.median(vals))) / 1.3, float(vals.max()) * 1.3
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="error = spread")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        subs = (1.0, 2.0, 5.0) if np.log10(hi / lo) < 2.5 else (1.0,)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=subs))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"committee spread, {label}")
        ax.set_ylabel(f"|error|, {label}")
        rho = stats["spearman"]
        ax.set_title(
            f"Spearman rho = {rho:.2f} (n = {stats['n']})" if rho is not None else f"n = {stats['n']}", fontsize=10
        )
        ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)
