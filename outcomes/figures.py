"""Figures as bytes (PNG or SVG): Kaplan-Meier curves with CI bands and a number-at-risk table, and
a swimmer plot of patients' courses.

Matplotlib object API on the Agg canvas only (no pyplot state, safe inside a web worker); no
Django. SVG keeps text as text (``svg.fonttype = none``) so labels are searchable and accessible.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

from .survival import KaplanMeier, number_at_risk  # noqa: E402

FORMATS = ("png", "svg")
PALETTE = ("#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6b4c9a", "#00798c", "#5f5f5f")


def _render(fig: Figure, fmt: str, dpi: int) -> bytes:
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    meta = {"Date": None} if fmt == "svg" else {"Software": None}
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "radpath"}):
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
    return buf.getvalue()


def _steps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-continuous step coordinates starting at (0, 1)."""
    xs = np.concatenate([[0.0], x])
    ys = np.concatenate([[1.0], y])
    return xs, ys


def km_figure(
    curves: Mapping[str, KaplanMeier] | Sequence[KaplanMeier],
    risk_times: Sequence[float] | None = None,
    fmt: str = "png",
    time_scale: float = 1.0,
    xlabel: str = "Time",
    ylabel: str = "Survival probability",
    title: str | None = None,
    show_ci: bool = True,
    show_censors: bool = True,
    footnote: str | None = None,
    dpi: int = 150,
) -> bytes:
    """Kaplan-Meier curves with CI bands, censoring ticks and a number-at-risk table (one row per group).

    ``time_scale`` divides the curve times for display (e.g. 30.4375 to plot days as months);
    ``risk_times`` are in display units. The CI method of the curves is written under the plot.
    """
    items = list(curves.items()) if isinstance(curves, Mapping) else [(c.label or f"group {i + 1}", c) for i, c in enumerate(curves)]
    if not items:
        raise ValueError("no curves to plot")
    t_max = max(float(c.time[-1]) for _, c in items) / time_scale
    if risk_times is None:
        risk_times = np.linspace(0, t_max, 6).round(1).tolist()
    n = len(items)
    fig = Figure(figsize=(7.5, 4.8 + 0.28 * n))
    gs = fig.add_gridspec(2, 1, height_ratios=[4.6, 0.45 + 0.28 * n], hspace=0.32)
    ax = fig.add_subplot(gs[0])
    rax = fig.add_subplot(gs[1], sharex=ax)
    for i, (label, km) in enumerate(items):
        color = PALETTE[i % len(PALETTE)]
        x = km.time / time_scale
        xs, ys = _steps(x, km.survival)
        ax.step(xs, ys, where="post", color=color, lw=1.8, label=f"{label} (n={km.n}, events={km.events})")
        if show_ci:
            lo = np.nan_to_num(np.concatenate([[1.0], km.lower]), nan=0.0)
            hi = np.nan_to_num(np.concatenate([[1.0], km.upper]), nan=0.0)
            ax.fill_between(xs, lo, hi, step="post", color=color, alpha=0.15, lw=0)
        if show_censors:
            cens = km.n_censor > 0
            ax.plot(x[cens], km.survival[cens], "|", color=color, ms=7, mew=1.2)
        counts = number_at_risk(km, [t * time_scale for t in risk_times])
        row = n - 1 - i
        for t, c in zip(risk_times, counts):
            rax.text(t, row, str(c), ha="center", va="center", fontsize=8, color=color)
        rax.text(-0.07, row, label, ha="right", va="center", fontsize=8, color=color, transform=rax.get_yaxis_transform())
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, t_max * 1.02)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25)
    methods = sorted({c.conf_type for _, c in items})
    ci_note = footnote or f"Shaded: {int(round(items[0][1].conf_level * 100))} % CI ({', '.join(methods)} method)"
    leg = ax.legend(loc="upper right", fontsize=8, frameon=False, title=ci_note if show_ci else footnote)
    if leg.get_title() is not None:
        leg.get_title().set_fontsize(7)
    if title:
        ax.set_title(title)
    ax.tick_params(labelbottom=True)
    ax.set_xticks(list(risk_times))
    rax.set_ylim(-0.6, n - 0.4)
    rax.set_yticks([])
    for s in ("top", "right", "left", "bottom"):
        rax.spines[s].set_visible(False)
    rax.tick_params(axis="x", bottom=False, labelbottom=False)
    rax.set_title("Number at risk", fontsize=8, loc="left")
    ax.set_xlabel(xlabel)
    return _render(fig, fmt, dpi)


# --------------------------------------------------------------------------------------------
# Swimmer plot
# --------------------------------------------------------------------------------------------

MARKERS = {
    "CR": dict(marker="o", color="#2e933c", label="CR"),
    "PR": dict(marker="o", color="#8cc084", label="PR", markerfacecolor="white"),
    "SD": dict(marker="s", color="#9e9e9e", label="SD"),
    "PD": dict(marker="^", color="#d1495b", label="PD"),
    "recurrence": dict(marker="D", color="#8e2c48", label="Recurrence"),
    "death": dict(marker="X", color="black", label="Death"),
}


@dataclass
class SwimmerLane:
    """One patient: bar from time zero to ``end``; ``events`` = [(time, kind)], kind in MARKERS."""

    label: str
    end: float
    events: list[tuple[float, str]] = field(default_factory=list)
    alive: bool = True  # alive at last follow-up -> censoring arrow at the end of the bar
    group: str | None = None


def swimmer_figure(
    lanes: Sequence[SwimmerLane],
    fmt: str = "png",
    xlabel: str = "Months from time zero",
    title: str | None = None,
    dpi: int = 150,
) -> bytes:
    """Swimmer plot: one horizontal bar per patient, markers for CR / PR / SD / PD, recurrence and
    death, an arrow when the patient is alive at last follow-up (censored). Longest bar on top."""
    if not lanes:
        raise ValueError("no lanes to plot")
    order = sorted(lanes, key=lambda l: l.end)
    groups = sorted({l.group for l in order if l.group is not None})
    gcolor = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    fig = Figure(figsize=(8.5, max(2.8, 1.2 + 0.28 * len(order))))
    ax = fig.add_subplot(1, 1, 1)
    xmax = max(l.end for l in order)
    used: set[str] = set()
    for y, lane in enumerate(order):
        color = gcolor.get(lane.group, "#b0c4de")
        ax.barh(y, lane.end, height=0.6, color=color, alpha=0.7, edgecolor="none")
        for t, kind in lane.events:
            if kind not in MARKERS:
                raise ValueError(f"unknown swimmer event {kind!r}; use one of {sorted(MARKERS)}")
            m = MARKERS[kind]
            ax.plot([t], [y], linestyle="none", marker=m["marker"], color=m["color"],
                    markerfacecolor=m.get("markerfacecolor", m["color"]), ms=7, zorder=3)
            used.add(kind)
        if lane.alive:
            ax.annotate("", xy=(lane.end + 0.04 * xmax, y), xytext=(lane.end, y),
                        arrowprops=dict(arrowstyle="->", color="#333333", lw=1.2))
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([l.label for l in order], fontsize=7)
    ax.set_xlim(0, xmax * 1.08)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.25)
    handles = [Line2D([], [], linestyle="none", marker=MARKERS[k]["marker"], color=MARKERS[k]["color"],
                      markerfacecolor=MARKERS[k].get("markerfacecolor", MARKERS[k]["color"]), label=MARKERS[k]["label"])
               for k in MARKERS if k in used]
    if any(l.alive for l in order):
        handles.append(Line2D([], [], marker=r"$\rightarrow$", linestyle="none", color="#333333", ms=10, label="Alive (censored)"))
    for g in groups:
        handles.append(Line2D([], [], lw=6, color=gcolor[g], alpha=0.7, label=str(g)))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    if title:
        ax.set_title(title)
    return _render(fig, fmt, dpi)


# --------------------------------------------------------------------------------------------
# Forest plot
# --------------------------------------------------------------------------------------------


@dataclass
class ForestRow:
    """One model term: its label, the ratio (HR) and its CI, and the p value written beside it."""

    label: str
    estimate: float
    lower: float
    upper: float
    p_value: float | None = None


def _ratio_ticks(lo: float, hi: float) -> list[float]:
    """Ratio-axis ticks inside [lo, hi]: 1, 2, 5 per decade (0.1, 0.2, 0.5, 1, 2, 5, 10 ...); finer steps when that
    leaves fewer than three (the forest axis always spans at least 0.8 to 1.25), decades only when more than eight."""
    def inside(mantissas):
        return [t for t in (round(m * 10.0 ** k, 6) for k in range(-6, 7) for m in mantissas) if lo <= t <= hi]

    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 7), (1, 1.1, 1.2, 1.3, 1.4, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = inside(mantissas)
        if len(ticks) >= 3:
            break
    return ticks if len(ticks) <= 8 else inside((1,))


def forest_figure(
    rows: Sequence[ForestRow],
    fmt: str = "png",
    title: str | None = None,
    xlabel: str = "Hazard ratio (95 % CI, log scale)",
    dpi: int = 150,
) -> bytes:
    """Forest plot: one line per term, the estimate as a square on its CI, log x axis with the no-effect line at 1,
    "HR (lower-upper), p" written right of the plot. First term on top."""
    rows = [r for r in rows if all(np.isfinite([r.estimate, r.lower, r.upper])) and r.lower > 0]
    if not rows:
        raise ValueError("no finite ratio to plot")
    n = len(rows)
    fig = Figure(figsize=(7.5, 1.2 + 0.42 * n))
    ax = fig.add_subplot(1, 1, 1)
    ys = np.arange(n)[::-1]
    for y, r in zip(ys, rows):
        ax.plot([r.lower, r.upper], [y, y], color=PALETTE[0], lw=1.6)
        ax.plot([r.estimate], [y], marker="s", color=PALETTE[0], ms=6)
        p = "" if r.p_value is None else (f", p = {r.p_value:.3f}" if r.p_value >= 0.001 else ", p < 0.001")
        ax.text(1.02, y, f"{r.estimate:.2f} ({r.lower:.2f}–{r.upper:.2f}){p}", transform=ax.get_yaxis_transform(),
                va="center", fontsize=8)
    ax.axvline(1.0, color="#5f5f5f", lw=1, ls="--")
    ax.set_xscale("log")
    lo = min(min(r.lower for r in rows), 1.0)
    hi = max(max(r.upper for r in rows), 1.0)
    ax.set_xlim(lo / 1.25, hi * 1.25)
    ax.xaxis.set_major_locator(FixedLocator(_ratio_ticks(lo / 1.25, hi * 1.25)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 0.5, 1, 2 (not 5 x 10^-1, 10^0)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ys)
    ax.set_yticklabels([r.label for r in rows], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.25, which="both")
    if title:
        ax.set_title(title, fontsize=10)
    return _render(fig, fmt, dpi)
