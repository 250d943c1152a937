#!/usr/bin/env python3
"""Draws the plots of `gqe compare` from its plot_data.json; every series is computed by gqe.

Usage: plot_runs.py PLOT_DATA_JSON OUT_DIR
Writes loss.png, loss_delta.png, lr.png and, for each GQE run, router_<run>.png; prints their paths.
"""
import json
import math
import os
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def xy(points):
    a = np.asarray(points, dtype=float).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def save(fig, path, dpi, written):
    """A PNG is whole or absent: drawn to PATH.tmp, fsynced, renamed. A failed write (full disk)
    exits with status 3 and one line, which gqe compare reports as a failure, not a skip."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            fig.savefig(f, dpi=dpi, format="png")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        print(f"{path}: cannot write ({e.strerror})", file=sys.stderr)
        sys.exit(3)
    plt.close(fig)
    written.append(path)


def finish(fig, ax, path, log_x, written):
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path, 120, written)


def main():
    data = json.loads(pathlib.Path(sys.argv[1]).read_text())
    out = pathlib.Path(sys.argv[2])
    runs, log_x, written = data["runs"], data["log_x"], []

    # Loss against tokens: raw steps faint, their moving average solid, validation dashed.
    fig, ax = plt.subplots(figsize=(9, 5.5))
    later = []
    for i, run in enumerate(runs):
        color = f"C{i}"
        if run["train"]:
            ax.plot(*xy(run["train"]), color=color, alpha=0.18, lw=0.8)
        if run["train_ema"]:
            x, y = xy(run["train_ema"])
            ax.plot(x, y, color=color, lw=1.8, label=f"{run['name']} train (moving average)")
            later.extend(y[len(y) // 10:])
        if run["val"]:
            ax.plot(*xy(run["val"]), color=color, lw=1.2, ls="--", marker="o", ms=3, label=f"{run['name']} validation")
    if later:  # the first steps' loss would flatten everything else
        ax.set_ylim(top=float(np.percentile(later, 99)) + 0.1)
    ax.set(xlabel="tokens seen", ylabel="loss (nats per token)", title="Training and validation loss")
    finish(fig, ax, out / "loss.png", log_x, written)

    # Difference to the first run, on the first run's tokens.
    base = runs[0]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.axhline(0, color="black", lw=0.8)
    bx, by = xy(base["train_ema"]) if base["train_ema"] else (np.array([]), np.array([]))
    vx, vy = xy(base["val"]) if base["val"] else (np.array([]), np.array([]))
    for i, run in enumerate(runs[1:], start=1):
        color = f"C{i}"
        if run["train_ema"] and len(bx):
            x, y = xy(run["train_ema"])
            keep = (bx >= x[0]) & (bx <= x[-1])
            ax.plot(bx[keep], np.interp(bx[keep], x, y) - by[keep], color=color, lw=1.6, label=f"{run['name']} train")
        if run["val"] and len(vx):
            x, y = xy(run["val"])
            keep = (vx >= x[0]) & (vx <= x[-1])
            ax.plot(vx[keep], np.interp(vx[keep], x, y) - vy[keep], color=color, ls="--", marker="o", ms=3,
                    label=f"{run['name']} validation")
    ax.set(xlabel="tokens seen", ylabel=f"loss - {base['name']} loss (nats)",
           title=f"Loss difference to {base['name']} (below 0: better)")
    finish(fig, ax, out / "loss_delta.png", log_x, written)

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for i, run in enumerate(runs):
        if run["lr"]:
            ax.plot(*xy(run["lr"]), color=f"C{i}", label=run["name"])
    ax.set(xlabel="tokens seen", ylabel="learning rate", title="Learning rate schedule")
    finish(fig, ax, out / "lr.png", log_x, written)

    # GQE routers: does any group collapse onto one expert?
    for run in runs:
        router = run.get("router")
        if not router or not router["tokens"]:
            continue
        tokens = np.asarray(router["tokens"], dtype=float)
        busiest = np.asarray(router["busiest"], dtype=float)  # [points, layers, groups]
        entropy = np.asarray(router["entropy"], dtype=float)  # [points, layers]
        layers = busiest.shape[1]
        cols = min(4, layers)
        rows = math.ceil(layers / cols) + 1
        fig = plt.figure(figsize=(3.2 * cols, 2.4 * rows))
        for layer in range(layers):
            ax = fig.add_subplot(rows, cols, layer + 1)
            for g in range(busiest.shape[2]):
                ax.plot(tokens, busiest[:, layer, g], lw=1.0, label=f"group {g}")
            ax.axhline(router["balanced"], color="black", ls="--", lw=0.8)
            ax.axhline(1.0, color="red", ls=":", lw=0.8)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"layer {layer}", fontsize=9)
            ax.tick_params(labelsize=7)
            if log_x:
                ax.set_xscale("log")
        ax = fig.add_subplot(rows, 1, rows)
        for layer in range(layers):
            ax.plot(tokens, entropy[:, layer], lw=1.0, label=f"layer {layer}")
        ax.set(xlabel="tokens seen", ylabel="router entropy (nats)")
        if log_x:
            ax.set_xscale("log")
        ax.legend(fontsize=6, ncol=8)
        fig.suptitle(f"{run['name']}: share of each group's tokens taken by its busiest expert "
                     f"(dashed: balanced, dotted: collapsed)", fontsize=10)
        fig.tight_layout()
        save(fig, out / f"router_{run['name']}.png", 110, written)

    for path in written:
        print(f"plot: {path}")


if __name__ == "__main__":
    main()
