"""Drawing a ``charts.Chart`` as a PNG with matplotlib's Agg canvas.

Only the report commands import this module: matplotlib (and numpy under it)
costs start-up time and tens of megabytes, which the daemon must not carry
(a test holds that importing the daemon leaves matplotlib out). The figure is
made with the object API (``Figure`` + ``FigureCanvasAgg``), no pyplot and no
global backend state, and the PNG carries no timestamp or version, so the same
chart gives the same bytes.
"""
from __future__ import annotations

import io
import os
import tempfile
import textwrap

# a service user (DynamicUser) has no writable home for matplotlib's font cache
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "maild-matplotlib"))

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from maild.billing.charts import Chart, value_label  # noqa: E402

WIDTH_PX = 720
DPI = 100
_TEXT = "#222222"


def _scale(chart: Chart, value: float) -> float:
    return value / 60 if chart.unit == "minutes" else value


def render_png(chart: Chart, language: str = "en", width_px: int = WIDTH_PX) -> bytes:
    """The chart as PNG bytes, ``width_px`` wide; height grows with the number of bars."""
    out = io.BytesIO()
    draw(chart, language, width_px).savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def draw(chart: Chart, language: str = "en", width_px: int = WIDTH_PX) -> Figure:
    """The chart's figure, laid out (``render_png`` saves it)."""
    rows = max(len(chart.categories), 1)
    if chart.kind == "barh":
        per_row = 0.5 if chart.stacked else 0.3 * max(len(chart.series), 1) + 0.3
        height = min(1.6 + per_row * rows, 14.0)
    else:
        height = 3.6 + 0.25 * len(chart.bands)
    figure = Figure(figsize=(width_px / DPI, height), dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.set_title(chart.title, loc="left", fontsize=13, color=_TEXT)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=10, colors=_TEXT)
    if not chart.categories or not any(any(s.values) for s in chart.series):
        ax.text(0.5, 0.5, "-", ha="center", va="center", transform=ax.transAxes, fontsize=14, color="#777777")
        ax.set_xticks([])
        ax.set_yticks([])
    elif chart.kind == "bar":
        _vertical(ax, chart)
    else:
        _horizontal(ax, chart, language)
    figure.tight_layout()
    return figure


def _vertical(ax: Axes, chart: Chart) -> None:
    positions = list(range(len(chart.categories)))
    series = chart.series[0]
    colours = [
        (chart.bar_colours[i] if i < len(chart.bar_colours) and chart.bar_colours[i] else series.colour)
        for i in positions
    ]
    alphas = [0.35 if i in chart.muted else 1.0 for i in positions]
    for i in positions:
        ax.bar(i, _scale(chart, series.values[i]), color=colours[i], alpha=alphas[i], width=0.75)
    labels = [textwrap.fill(c, 12) for c in chart.categories]
    ax.set_xticks(positions, labels, fontsize=8 if len(positions) > 12 else 9)
    ax.set_xlim(-0.6, len(positions) - 0.4)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if chart.bands:
        _band_strips(ax, chart)


def _band_strips(ax: Axes, chart: Chart) -> None:
    """The peak windows as one strip each above the bars, a block per day: several windows overlap
    on most days, and shading them all behind the bars left a muddy background nobody could read."""
    top = max([_scale(chart, v) for v in chart.series[0].values] + [1.0])
    ticks = [t for t in ax.get_yticks() if 0 <= t <= top]
    height = top * 0.07
    handles = []
    for row, band in enumerate(chart.bands):
        y = top * 1.06 + row * height * 1.35
        ax.broken_barh([(i - 0.45, 0.9) for i in sorted(band.indices)], (y, height), facecolors=band.colour,
                       edgecolor="none")
        handles.append(Patch(facecolor=band.colour, label=band.label))
    ax.set_ylim(0, top * 1.06 + len(chart.bands) * height * 1.35)
    ax.set_yticks(ticks)
    ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=1, frameon=False)


def _horizontal(ax: Axes, chart: Chart, language: str) -> None:
    n = len(chart.categories)
    k = len(chart.series)
    top = [n - 1 - i for i in range(n)]  # first category at the top
    if chart.stacked:
        left = [0.0] * n
        for s in chart.series:
            values = [_scale(chart, v) for v in s.values]
            ax.barh(top, values, left=left, color=s.colour, label=s.name, height=0.6)
            left = [a + b for a, b in zip(left, values)]
        ends = left
    else:
        height = 0.8 / k
        ends = [0.0] * n
        for j, s in enumerate(chart.series):
            offsets = [t + 0.4 - height * (j + 0.5) for t in top]
            values = [_scale(chart, v) for v in s.values]
            ax.barh(offsets, values, height=height * 0.92, color=s.colour, label=s.name)
            for y, v, raw in zip(offsets, values, s.values):
                if raw:
                    ax.text(v, y, " " + value_label(chart, raw, language), va="center", fontsize=9, color=_TEXT)
            ends = [max(a, b) for a, b in zip(ends, values)]
    notes = list(chart.notes) + [""] * (n - len(chart.notes))
    ax.set_yticks(top, [textwrap.fill(_short(c, 48), 24) + (f"\n{textwrap.fill(note, 24)}" if note else "")
                        for c, note in zip(chart.categories, notes)], fontsize=10)
    widest = max(ends) if ends else 0
    ax.set_xlim(0, widest * 1.25 + (1 if widest == 0 else 0))
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if chart.unit == "minutes":
        _hour_ticks(ax, widest * 1.25 + (1 if widest == 0 else 0), language)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if k > 1:
        # two columns of 720 px: a longer name ("na następny miesiąc / saldo końcowe") ran off the image
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles, [textwrap.fill(label, 32) for label in labels], fontsize=9, loc="upper left",
                  bbox_to_anchor=(0, -0.1), ncol=min(k, 2), frameon=False)


# Tick steps of an hours axis, in minutes: quarter and half hours only on an axis up to three hours
# (at most six ticks; "1 godz. 30 min" is a long label), whole hours above it.
_SHORT_STEPS = (15, 30)
_HOUR_STEPS = (60, 120, 180, 300, 600, 1200, 3000, 6000, 12000, 30000, 60000, 120000, 300000)
_MAX_TICKS = 6


def _hour_ticks(ax: Axes, top_hours: float, language: str) -> None:
    """An hours axis (its values hours, drawn from minutes) written as the bars' labels and the
    statement's tables write time ("2 godz.", "30 min", "1,398 h"): matplotlib's own ticks read
    "0.0 0.5 ... 2.5", fractions of an hour with a decimal point the Polish reader does not use."""
    from maild.billing.charts import hours

    top = top_hours * 60
    steps = _SHORT_STEPS + _HOUR_STEPS if top <= 180 else _HOUR_STEPS
    step = next((s for s in steps if top / s <= _MAX_TICKS), steps[-1])
    ticks = [i * step for i in range(int(top // step) + 1)]
    ax.set_xticks([t / 60 for t in ticks], ["0" if t == 0 else hours(t, language) for t in ticks])


def _short(label: str, limit: int = 34) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
