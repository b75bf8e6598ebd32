"""Plots of finite-temperature runs (matplotlib, PNG): tilt amplitudes, susceptibilities, lattice parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import pyplot, save_figure


def plot_scan(scan: dict, path) -> Path:
    """Tilt amplitudes (R and M, per axis sorted), susceptibilities and pseudo-cubic lattice parameters
    against temperature for every run of a scan (heating solid, cooling dashed), transitions shaded."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 10), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, run in enumerate(r for r in scan["runs"] if r["temperature_K"]):
        t = np.array(run["temperature_K"])
        style = "-" if run["direction"] == "heat" else "--"
        label = f"{run['direction']} seed {run['seed']}"
        r = np.sort(np.array(run["R"]), axis=1)[:, ::-1]
        m = np.sort(np.array(run["M"]), axis=1)[:, ::-1]
        axes[0].plot(t, m[:, 0], style, color=colors[0], marker="o", ms=3, label=f"M max ({label})" if n == 0 else None)
        axes[0].plot(t, r[:, 0], style, color=colors[1], marker="s", ms=3, label="R max" if n == 0 else None)
        axes[0].plot(t, r[:, 1], style, color=colors[2], marker="^", ms=3, label="R second" if n == 0 else None)
        axes[1].plot(t, run["chi_M"], style, color=colors[0], marker="o", ms=3, label="chi M" if n == 0 else None)
        axes[1].plot(t, run["chi_R"], style, color=colors[1], marker="s", ms=3, label="chi R" if n == 0 else None)
        lat = np.array(run["lattice_sorted"])
        for k in range(3):
            axes[2].plot(
                t, lat[:, k], style, color=colors[3 + k], marker=".", label=f"a{k + 1} (sorted)" if n == 0 else None
            )
    transitions = sorted(scan.get("transitions", []), key=lambda tr: tr["temperature_K"])
    for tr, level in zip(transitions, _label_levels([tr["temperature_K"] for tr in transitions], axes[0])):
        for ax in axes:
            ax.axvspan(
                tr["temperature_K"] - tr["uncertainty_K"],
                tr["temperature_K"] + tr["uncertainty_K"],
                color="0.85",
                zorder=0,
            )
        axes[0].annotate(
            f"{tr['from']} -> {tr['to']}\n{tr['temperature_K']:.0f} +- {tr['uncertainty_K']:.0f} K",
            (tr["temperature_K"], 0.98 - 0.1 * level),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="top",
            fontsize=7,
        )
    axes[0].set_ylabel("tilt amplitude (deg)")
    axes[1].set_ylabel("susceptibility (deg$^2$/eV per f.u.)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("pseudo-cubic a (A)")
    axes[2].set_xlabel("temperature (K)")
    axes[0].set_title("tilt order parameters (solid: heating, dashed: cooling)")
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def _label_levels(temperatures, ax, width: float = 0.16) -> list[int]:
    """Row of each transition label (0 = top) so that labels closer than ``width`` of the x range share no row."""
    lo, hi = ax.get_xlim()
    span = (hi - lo) or 1.0
    last = []  # per row, the temperature of its rightmost label
    levels = []
    for t in temperatures:
        row = next((i for i, x in enumerate(last) if (t - x) / span >= width), len(last))
        if row == len(last):
            last.append(t)
        else:
            last[row] = t
        levels.append(row)
    return levels


def plot_run(result: dict, path) -> Path:
    """Per-frame tilt amplitudes and lattice parameters of an MD or MC run (stages one after another)."""
    plt = pyplot()
    series = result.get("series") or []
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True)
    offset = 0
    for s in series:
        r = np.abs(np.array(s["R"]))
        m = np.abs(np.array(s["M"]))
        lat = np.array(s["lattice"])
        x = offset + np.arange(len(r))
        for k, axis in enumerate("xyz"):
            axes[0].plot(x, m[:, k], "-", lw=0.8, label=f"|M_{axis}|" if offset == 0 else None, color=f"C{k}")
            axes[0].plot(x, r[:, k], ":", lw=0.8, label=f"|R_{axis}|" if offset == 0 else None, color=f"C{k}")
            axes[1].plot(x, lat[:, k], "-", lw=0.8, label="abc"[k] if offset == 0 else None, color=f"C{k + 3}")
        offset += len(r)
        axes[0].axvline(offset, color="0.8", lw=0.5)
    axes[0].set_ylabel("tilt amplitude (deg)")
    axes[1].set_ylabel("pseudo-cubic a (A)")
    axes[1].set_xlabel("sample")
    axes[0].set_title(f"{result.get('method', '').upper()} run: {result.get('atoms')} atoms")
    for ax in axes:
        ax.legend(fontsize=7, ncol=3)
    return save_figure(fig, path)


def plot_phases(rows: list[dict], path) -> Path:
    """Relaxed structures at 0 K: energy from the cubic cell (bars, lowest first) and the largest R and M tilt.

    ``rows``: dicts with ``start``, ``glazer``, ``energy_meV_per_fu``, ``R``, ``M`` (``pes simulate relax``).
    """
    plt = pyplot()
    rows = sorted(rows, key=lambda r: r["energy_meV_per_fu"])
    labels = [r["start"] if r["glazer"] == r["start"] else f"{r['start']}\n-> {r['glazer']}" for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.55 * len(rows) + 2), 6.5), sharex=True)
    axes[0].bar(x, [r["energy_meV_per_fu"] for r in rows], color="C0")
    axes[0].axhline(0.0, color="k", lw=0.6)
    axes[0].set_ylabel("E - E(cubic) (meV/f.u.)")
    axes[0].set_title("relaxed tilt systems at 0 K")
    axes[1].bar(x - 0.2, [float(np.abs(r["R"]).max()) for r in rows], 0.4, label="largest |R| (anti-phase)")
    axes[1].bar(x + 0.2, [float(np.abs(r["M"]).max()) for r in rows], 0.4, label="largest |M| (in-phase)")
    axes[1].set_ylabel("tilt (deg)")
    axes[1].set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    axes[1].legend(fontsize=7)
    return save_figure(fig, path)
