"""The pure half of compare_models.py: per-run rows aggregated over seeds, the markdown
table, the CSV, the markdown section swap and the plot. No training, no simulator."""

from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path
from typing import Any

FIELDS = ("pace", "family", "seed", "track", "status", "autonomy_pct", "interventions",
          "lap_ratio", "mean_abs_cte_m", "max_abs_cte_m", "mean_lap_s", "expert_lap_s",
          "latency_ms", "params", "train_s", "error")
BEGIN, END = "<!-- compare_models:begin -->", "<!-- compare_models:end -->"
DROVE_PCT = 99.5  # a seed "drove" a track at this autonomy or more (issue 18's bar)


def run_row(pace: str, family: str, seed: int, track: str, result: dict[str, Any],
            latency_ms: float | None, params: int | None, train_s: float | None
            ) -> dict[str, Any]:
    """One scored run: ``result`` is `car sim eval --json --vs-expert`'s object."""
    ratio = result.get("lap_time_vs_expert_pct")
    return {"pace": pace, "family": family, "seed": seed, "track": track, "status": "ok",
            "autonomy_pct": result.get("autonomy_pct"),
            "interventions": result.get("interventions"),
            "lap_ratio": None if ratio is None else round(1.0 + ratio / 100.0, 4),
            "mean_abs_cte_m": result.get("mean_abs_cte_m"),
            "max_abs_cte_m": result.get("max_abs_cte_m"),
            "mean_lap_s": result.get("mean_lap_time_s"),
            "expert_lap_s": (result.get("expert") or {}).get("mean_lap_time_s"),
            "latency_ms": latency_ms, "params": params, "train_s": train_s, "error": ""}


def failed_row(pace: str, family: str, seed: int, track: str, error: str) -> dict[str, Any]:
    """A run whose training, latency or eval step broke: kept as a row, counted as failed."""
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(pace=pace, family=family, seed=seed, track=track, status="failed", error=error)
    return row


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """(mean, sample std over seeds; 0 for one value), None when there is no value."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (pace, family, track) in first-seen order, each metric as mean_std
    over the group's seeds that ran; ``ok``/``seeds`` count them, ``errors`` says why not."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["pace"], r["family"], r["track"]), []).append(r)
    out = []
    for (pace, family, track), members in groups.items():
        ok = [r for r in members if r["status"] == "ok"]
        agg: dict[str, Any] = {"pace": pace, "family": family, "track": track,
                               "ok": len(ok), "seeds": len(members),
                               "errors": sorted({r["error"] for r in members if r["error"]})}
        for key in ("autonomy_pct", "lap_ratio", "mean_abs_cte_m", "latency_ms", "params",
                    "train_s"):
            agg[key] = mean_std([r[key] for r in ok])
        agg["laps_n"] = sum(r["lap_ratio"] is not None for r in ok)  # seeds with a lap done
        agg["autonomy_each"] = [float(r["autonomy_pct"]) for r in ok
                                if r["autonomy_pct"] is not None]
        agg["drove"] = sum(a >= DROVE_PCT for a in agg["autonomy_each"])
        out.append(agg)
    return out


def fmt(ms: tuple[float, float] | None, digits: int, n: int) -> str:
    """``mean ± std`` (just the mean for one seed), ``n/a`` when nothing ran."""
    if ms is None:
        return "n/a"
    mean, std = ms
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _params(ms: tuple[float, float] | None) -> str:
    if ms is None:
        return "n/a"
    n = ms[0]
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def format_table(groups: list[dict[str, Any]]) -> str:
    """The markdown table: one line per pace × family × track."""
    lines = ["| pace | family | track | seeds ok | drove (≥ 99.5 %) | autonomy (%) | "
             "lap time / expert's | mean \\|cte\\| (m) | latency p50 (ms) | parameters | "
             "train (min) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in groups:
        n = g["ok"]
        ratio = fmt(g["lap_ratio"], 3, g["laps_n"])
        if 0 < g["laps_n"] < n:
            ratio += f" ({g['laps_n']} seeds)"
        elif g["laps_n"] == 0:
            ratio = "no lap"
        train = g["train_s"] and (g["train_s"][0] / 60.0, 0.0)
        cells = [g["pace"], g["family"], g["track"], f"{n}/{g['seeds']}",
                 f"{g['drove']}/{n}" if n else "", fmt(g["autonomy_pct"], 1, n), ratio,
                 fmt(g["mean_abs_cte_m"], 3, n),
                 fmt(g["latency_ms"], 2, 1), _params(g["params"]), fmt(train, 1, 1)]
        if n == 0:
            why = "; ".join(g["errors"])[:100].replace("|", "/")
            cells[5:] = [f"failed: {why}", "", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in FIELDS} for r in rows)


def replace_section(text: str, section: str) -> str:
    """``text`` with the marked compare_models section replaced by ``section`` (appended
    when there is none)."""
    block = f"{BEGIN}\n{section.strip()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return f"{text.rstrip()}\n\n{block}\n" if text.strip() else f"{block}\n"


def plot(groups: list[dict[str, Any]], path: Path) -> None:
    """Autonomy (top) and lap time vs the expert (bottom) per family, one bar per unseen
    track with its std over seeds as the error bar; one column per pace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paces = list(dict.fromkeys(g["pace"] for g in groups))
    families = list(dict.fromkeys(g["family"] for g in groups))
    tracks = list(dict.fromkeys(g["track"] for g in groups))
    fig, axes = plt.subplots(2, len(paces), squeeze=False,
                             figsize=(max(7.0, 1.5 + 1.3 * len(families) * len(paces)), 6.5))
    width = 0.8 / max(1, len(tracks))
    for col, pace in enumerate(paces):
        for row, (key, label) in enumerate((("autonomy_pct", "autonomy (%)"),
                                            ("lap_ratio", "lap time / expert's"))):
            ax = axes[row][col]
            for t, track in enumerate(tracks):
                xs, ys, es, each = [], [], [], []
                for f, family in enumerate(families):
                    g = next((g for g in groups if (g["pace"], g["family"], g["track"])
                              == (pace, family, track)), None)
                    if g is not None and g[key] is not None:
                        xs.append(f + (t - (len(tracks) - 1) / 2) * width)
                        ys.append(g[key][0])
                        es.append(g[key][1])
                        each.append(g["autonomy_each"])
                if key == "autonomy_pct":  # bars: the mean; black dots: each seed
                    bars = ax.bar(xs, ys, width, color=f"C{t}", label=track)
                    ax.bar_label(bars, fmt="%.0f", fontsize=7, label_type="center")
                    for x, seeds in zip(xs, each):
                        ax.plot([x] * len(seeds), seeds, "k.", ms=5)
                else:  # a ratio near 1: points, not bars from 0
                    ax.errorbar(xs, ys, yerr=es, fmt="o", capsize=3, color=f"C{t}")
            for f, family in enumerate(families):  # say why a family has no mark
                mine = [g for g in groups if (g["pace"], g["family"]) == (pace, family)]
                note = ("failed" if not any(g["ok"] for g in mine) else
                        "no lap" if all(g[key] is None for g in mine) else "")
                y = 50 if key == "autonomy_pct" else 1.0
                ax.text(f, y, note, ha="center", va="bottom", color="0.4", fontsize=9)
            ax.set_xticks(range(len(families)), families)
            ax.set_xlim(-0.5, len(families) - 0.5)
            ax.set_ylabel(label)
            ax.grid(axis="y", alpha=0.3)
            if key == "autonomy_pct":
                ax.set_ylim(0, 115)
                ax.set_yticks(range(0, 101, 20))
                ax.set_title(f"{pace} pace")
            else:
                ax.axhline(1.0, color="k", lw=0.8, ls="--")
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="upper center",
               title="unseen track (bars and points: mean over seeds; black dots: each "
                     "seed's autonomy; error bars: std over seeds)",
               ncol=len(tracks), fontsize=8, title_fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)
