"""Paired comparison of two models scored on the same patients (numpy only).

Two cohort means that differ by 0.01 Dice say nothing by themselves: the
patients vary far more than the models do.  Pairing by patient removes that
variation; the bootstrap over patients gives a 95% confidence interval of the
mean difference without assuming normality (Dice differences are skewed and
bounded).  An interval that excludes 0 is a difference this cohort supports.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Sequence

import numpy as np

# Metrics where a smaller value is better (the difference is still B - A; the
# table says which model the sign favours).
LOWER_IS_BETTER = ("hd95", "fp", "fn")


def read_scores(text: str, id_key: str = "patient") -> dict[str, dict[str, float]]:
    """A scores.csv as {patient: {column: float}}; empty or non-numeric cells are left out."""
    table: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        values = {}
        for key, cell in row.items():
            if key == id_key or cell in (None, ""):
                continue
            try:
                values[key] = float(cell)
            except ValueError:
                continue
        table[row[id_key]] = values
    return table


def bootstrap_ci(differences: Sequence[float], rounds: int = 10000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` (resampling patients)."""
    values = np.asarray(differences, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(rounds, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], column: str,
           rounds: int = 10000, seed: int = 0) -> dict:
    """B - A on ``column`` over the patients both score with a finite value.

    Returns n, mean of A and B, mean difference, its bootstrap 95% interval,
    and how many patients B did better, worse or the same on.
    """
    shared = sorted(p for p in set(a) & set(b)
                    if column in a[p] and column in b[p] and math.isfinite(a[p][column]) and math.isfinite(b[p][column]))
    diff = np.asarray([b[p][column] - a[p][column] for p in shared], dtype=np.float64)
    low, high = bootstrap_ci(diff, rounds, seed)
    lower_better = any(column.startswith(m) or f"_{m}_" in column for m in LOWER_IS_BETTER)
    better = diff < 0 if lower_better else diff > 0
    nan = float("nan")
    return {"column": column, "n": len(shared),
            "mean_a": float(np.mean([a[p][column] for p in shared])) if shared else nan,
            "mean_b": float(np.mean([b[p][column] for p in shared])) if shared else nan,
            "mean_diff": float(diff.mean()) if shared else nan, "ci_low": low, "ci_high": high,
            "b_better": int(np.count_nonzero(better)), "b_worse": int(np.count_nonzero(~better & (diff != 0))),
            "ties": int(np.count_nonzero(diff == 0)), "lower_is_better": lower_better}


def default_columns(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> list[str]:
    """Dice and HD95 columns (whole-region, then lesion-wise) that both files have, in A's order."""
    first_a = next(iter(a.values()), {})
    first_b = next(iter(b.values()), {})
    wanted = ("dice_", "hd95_", "lesion_dice_", "lesion_hd95_", "lesion_f1_")
    return [c for c in first_a if c in first_b and c.startswith(wanted)]


def format_comparison(results: list[dict], name_a: str, name_b: str) -> str:
    """Fixed-width table of :func:`paired` results."""
    header = ("metric", "n", "A mean", "B mean", "B - A", "95% CI (bootstrap)", "B better/worse/tie")
    lines = [header]
    for r in results:
        lines.append((r["column"] + (" (lower is better)" if r["lower_is_better"] else ""), str(r["n"]),
                      f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}", f"{r['mean_diff']:+.4f}",
                      f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]", f"{r['b_better']}/{r['b_worse']}/{r['ties']}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    text.append(f"A = {name_a}; B = {name_b}. Paired by patient; interval: percentile bootstrap over patients "
                "(a CI excluding 0 is a difference this cohort supports). Both files must come from the same scheme.")
    return "\n".join(text)
