"""Report plots, drawn with matplotlib's Agg backend and returned as base64 PNG strings.

Inline base64 images keep the HTML report one self-contained file that opens anywhere, with no
display and no side files. Every function returns None when there is nothing to draw.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and in CI

import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from drpo.evals.run_analysis import RunAnalysis
    from drpo.evals.summary import EvalSummary

COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def reward_over_depth(analysis: RunAnalysis) -> str | None:
    """Every candidate's level reward per level, the min–max band, mean, and each beam's path."""
    levels = [s for s in analysis.levels if s.mean is not None]
    if not levels:
        return None
    figure, axis = plt.subplots(figsize=(8, 4.2))
    xs = [s.level for s in levels]
    axis.fill_between(
        xs,
        [s.low or 0 for s in levels],
        [s.high or 0 for s in levels],
        color="#cccccc",
        alpha=0.5,
        label="min–max of the level",
    )
    means = [math.nan if s.mean is None else s.mean for s in levels]  # a gap, as for None
    axis.plot(xs, means, color="black", linewidth=1.5, label="level mean")
    points = [
        (int(c["level"]), float(c["level_reward"]))
        for c in analysis.candidates
        if c["level_reward"] is not None
    ]
    axis.scatter(
        [p[0] for p in points],
        [p[1] for p in points],
        s=14,
        color="#888888",
        zorder=3,
        label="candidates",
    )
    for index, (beam, path) in enumerate(sorted(analysis.beams.items())):
        scored = [(level, reward) for level, reward in path if reward is not None]
        axis.plot(
            [p[0] for p in scored],
            [p[1] for p in scored],
            marker="o",
            markersize=4,
            color=COLOURS[index % len(COLOURS)],
            label=f"beam {beam}",
        )
    axis.set_xlabel("level (depth)")
    axis.set_ylabel("reward (mean aspect score, 1–5)")
    axis.set_ylim(0.8, 5.2)
    axis.set_xticks(xs)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower left", ncol=2)
    axis.set_title("Reward over depth")
    return _png(figure)


def aspects_over_depth(analysis: RunAnalysis) -> str | None:
    """A PNG (base64) of each aspect's mean score per level, or None without scores."""
    rows = [r for r in analysis.aspect_by_level if r["mean"] is not None]
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(8, 3.6))
    aspects = sorted({r["aspect"] for r in rows})
    for index, aspect in enumerate(aspects):
        mine = [r for r in rows if r["aspect"] == aspect]
        axis.plot(
            [r["level"] for r in mine],
            [r["mean"] for r in mine],
            marker="o",
            markersize=3,
            color=COLOURS[index % len(COLOURS)] if index < 6 else None,
            label=aspect,
        )
    axis.set_xlabel("level (depth)")
    axis.set_ylabel("mean score")
    axis.set_ylim(0.8, 5.2)
    axis.set_xticks(sorted({r["level"] for r in rows}))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=3)
    axis.set_title("Judge scores per aspect over depth (search answers)")
    return _png(figure)


def aspect_means(summary: EvalSummary) -> str | None:
    """Grouped bars: each aspect's mean per condition, plus the overall mean."""
    aspects = summary.aspects
    if not aspects or not summary.conditions:
        return None
    labels = [*aspects, "overall"]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(labels)), 3.8))
    width = 0.8 / len(summary.conditions)
    for index, condition in enumerate(summary.conditions):
        values = [
            (condition.aspects[a].mean if a in condition.aspects else None) for a in aspects
        ] + [condition.overall]
        xs = [i + index * width for i in range(len(labels))]
        axis.bar(
            xs,
            [v or 0 for v in values],
            width,
            label=condition.name,
            color=COLOURS[index % len(COLOURS)],
        )
    axis.set_xticks([i + width * (len(summary.conditions) - 1) / 2 for i in range(len(labels))])
    axis.set_xticklabels(labels, fontsize=8)
    axis.set_ylim(0, 5.2)
    axis.set_ylabel("mean score (1–5)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Per-aspect means by condition")
    return _png(figure)


def win_rates(summary: EvalSummary) -> str | None:
    """Each pair's win rate with its bootstrap 95 % interval; 0.5 means no difference."""
    pairs = [p for p in summary.pairs if p.result.rate is not None]
    if not pairs:
        return None
    figure, axis = plt.subplots(figsize=(7, 0.7 * len(pairs) + 1.4))
    for index, pair in enumerate(pairs):
        result, rate = pair.result, pair.result.rate or 0.0  # every pair shown has a rate
        low, high = result.ci or (rate, rate)
        axis.plot([low, high], [index, index], color="black", linewidth=2)
        axis.plot([rate], [index], marker="o", color=COLOURS[0], markersize=8)
    axis.axvline(0.5, color="#C44E52", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(pairs)))
    axis.set_yticklabels([f"{p.result.x} vs {p.result.y}" for p in pairs])
    axis.set_xlim(-0.02, 1.02)
    axis.set_xlabel("win rate (ties count one half), bootstrap 95 % CI")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title("Pairwise win rates")
    return _png(figure)


def length_vs_score(summary: EvalSummary) -> str | None:
    """Answer length against its mean score, per condition: the length-bias probe."""
    figure, axis = plt.subplots(figsize=(7, 3.8))
    drawn = False
    for index, condition in enumerate(summary.conditions):
        points = [
            (detail.answers[condition.name]["words"], detail.answers[condition.name]["score"])
            for detail in summary.details
            if condition.name in detail.answers
            and detail.answers[condition.name]["words"] is not None
            and detail.answers[condition.name]["score"] is not None
        ]
        if points:
            drawn = True
            axis.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                s=16,
                color=COLOURS[index % len(COLOURS)],
                label=condition.name,
                alpha=0.8,
            )
    if not drawn:
        plt.close(figure)
        return None
    axis.set_xlabel("answer length (words)")
    axis.set_ylabel("mean score")
    axis.set_ylim(0.8, 5.2)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Length against score")
    return _png(figure)
