#!/usr/bin/env python3
"""Draws the plots of `gqe ladder fit` from its ladder.json; every series is computed by gqe.

Usage: plot_ladder.py LADDER_JSON OUT_DIR
Writes loss_vs_compute.png, gap_vs_compute.png and (with a GQE arm) router_health.png; prints
their paths.
"""
import json
import pathlib
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from plot_runs import finish  # noqa: E402  (log x, grid, legend; a PNG whole or absent)


def series(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def label(ax, ylabel, title):
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def main():
    data = json.loads(pathlib.Path(sys.argv[1]).read_text())["plot"]
    out = pathlib.Path(sys.argv[2])
    grid, arms, written = np.asarray(data["grid"], dtype=float), data["arms"], []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    # Loss against compute: measured points (seed mean and spread), the fitted law solid over the
    # measured range and dashed beyond it, its 90% band, the targets marked.
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, arm in enumerate(arms):
        c = colors[i % len(colors)]
        pts = arm.get("points", [])
        if pts:
            ax.errorbar([p["flops"] for p in pts], [p["mean"] for p in pts], yerr=[p["sd"] for p in pts], fmt="o", color=c,
                        capsize=3, label=f"{arm['name']} (measured)")
        if "fit" in arm and len(grid):
            f = arm["fit"]
            inside = grid <= f["max_measured"] * 1.0001
            curve = series(f["curve"])
            ax.plot(grid[inside], curve[inside], "-", color=c, label=f"{arm['name']} fit")
            ax.plot(grid[~inside], curve[~inside], "--", color=c)
            ax.fill_between(grid, series(f["lo"]), series(f["hi"]), color=c, alpha=0.15, linewidth=0)
        for t in arm.get("targets", []):
            ax.axvline(t["flops"], color=c, alpha=0.3, linestyle=":")
            if i == 0:
                ax.annotate(t["label"], (t["flops"], 1), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                            va="top", ha="right")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    label(ax, "final validation loss", "Loss against compute (band: 90% bootstrap interval)")
    finish(fig, ax, out / "loss_vs_compute.png", True, written)

    # The gap to the baseline: measured per rung (paired by seed), and the laws' difference at
    # matched FLOPs with its band.
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.axhline(0, color="black", linewidth=0.8)
    for i, arm in enumerate(arms[1:], start=1):
        c = colors[i % len(colors)]
        pts = [p for p in arm.get("points", []) if p["gap"] is not None]
        if pts:
            ax.errorbar([p["flops"] for p in pts], [p["gap"] for p in pts],
                        yerr=[0 if p["gap_sd"] is None else p["gap_sd"] for p in pts], fmt="o", color=c, capsize=3,
                        label=f"{arm['name']} - {data['baseline']} (measured, matched tokens)")
        if "fit" in arm and len(grid):
            f = arm["fit"]
            ax.plot(grid, series(f["gap"]), "-", color=c, label=f"{arm['name']} - {data['baseline']} (fits, matched FLOPs)")
            ax.fill_between(grid, series(f["gap_lo"]), series(f["gap_hi"]), color=c, alpha=0.15, linewidth=0)
    label(ax, "loss difference (below 0: better than the baseline)", "The gap against compute")
    finish(fig, ax, out / "gap_vs_compute.png", True, written)

    # Router health per rung: does balance degrade with size?
    gqe = [a for a in arms if a["gqe"] and any(p["busiest"] is not None for p in a.get("points", []))]
    if gqe:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, arm in enumerate(gqe):
            pts = [p for p in arm["points"] if p["busiest"] is not None]
            ax.plot([p["flops"] for p in pts], [p["busiest"] for p in pts], "o-", label=arm["name"])
            ax.axhline(pts[0]["balanced"], color="gray", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1.05)
        label(ax, "busiest expert's share (dashed: balanced k/M)", "Router balance per rung (1 = collapsed)")
        finish(fig, ax, out / "router_health.png", True, written)

    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
