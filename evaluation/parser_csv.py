"""Scores in the columns of the official parser (``brats-parse-metrics seg`` / ``mets``), for the leaderboard.

``evaluate`` under a 2026 scheme writes ``official_scores.csv`` beside
``scores.csv``: one row per patient with the official parser's column names
(``all_instance_f1_wt``, ``global_hd95_et``, ``lesionwise_dsc_mean_tc``, ...,
regions in lower case), rows for patients that could not be scored as the
parser fills missing subjects (373 for HD95 columns, 0 for the rest), then
the parser's ``mean``, ``std`` and ``median`` rows (pandas semantics: NaN
skipped, an infinity kept, so a lesion-wise HD95 of inf makes the mean inf;
std with ddof 1).  Our own code of the published rules, checked against the
package's output in tests/evaluation/test_official.py.

METS (``brats-parse-metrics mets``, volume threshold 20 mm3, Dice threshold
0.1 by default): true lesions below the volume threshold are "small"; a
small lesion is detected when matched with Dice >= the threshold; detection
F1 = 2 TP / (2 TP + FP + FN) with every unmatched prediction a false
positive; lesion-wise means are over the large lesions plus one Dice 0 /
NSD 0 / HD95 373 entry per false positive.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from evaluation.official import PARSER_HD95

_INSTANCE = (("tp", "tp"), ("fp", "fp"), ("fn", "fn"), ("prec", "precision"), ("rec", "recall"), ("f1", "f1"))
METS_VOLUME_MM3, METS_OVERLAP = 20.0, 0.1
NAN = float("nan")


def _std(values) -> float:
    return float(np.std(values)) if len(values) else NAN


def _matched(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "truth" and r["matched"]]


def _lesion_stats(records: list[dict], scores: dict) -> dict:
    """Mean (the scheme's score) and std (ddof 0, over matched lesions; NaN when none) of Dice, NSD, HD95."""
    matched = _matched(records)
    out = {}
    for name, key in (("dsc", "dice"), ("nsd", "nsd"), ("hd95", "hd95")):
        out[f"lesionwise_{name}_mean"] = scores[key]
        out[f"lesionwise_{name}_std"] = _std([r[key] for r in matched])
    return out


def _global(row: dict, region: str) -> dict:
    hd95 = row[f"hd95_{region}"]
    return {"global_dsc": row[f"dice_{region}"], "global_nsd": row[f"nsd_{region}"],
            "global_hd95": PARSER_HD95 if math.isinf(hd95) else hd95}


def _detection(tp: int, fp: int, fn: int) -> dict:
    """Counts, precision, recall and F1 = 2TP / (2TP + FP + FN) as the mets parser writes them (0 when undefined)."""
    denominator = 2 * tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn, "prec": tp / (tp + fp) if tp + fp else 0.0,
            "rec": tp / (tp + fn) if tp + fn else 0.0, "f1": 2 * tp / denominator if denominator else 0.0}


def mets_region(records: list[dict], volume_mm3: float = METS_VOLUME_MM3,
                overlap: float = METS_OVERLAP) -> dict[str, float]:
    """One region's large/small-lesion columns (prefixes ``large_instance_``, ``small_instance_``,
    ``lesionwise_``) by the mets parser's rules (module docstring)."""
    truths = [r for r in records if r["kind"] == "truth"]
    n_fp = sum(1 for r in records if r["kind"] != "truth")
    large = [r for r in truths if r["volume_mm3"] >= volume_mm3]
    small = [r for r in truths if r["volume_mm3"] < volume_mm3]
    out: dict[str, float] = {}
    for prefix, group in (("large_instance", large), ("small_instance", small)):
        tp = sum(1 for r in group if r["matched"] and r["dice"] >= overlap)
        found = _detection(tp, n_fp, len(group) - tp) if group else dict.fromkeys(("tp", "fp", "fn", "prec", "rec",
                                                                                   "f1"), NAN)
        out.update({f"{prefix}_{k}": v for k, v in found.items()})
    dsc = [r["dice"] if r["matched"] else 0.0 for r in large] + [0.0] * n_fp
    nsd = [r["nsd"] if r["matched"] else 0.0 for r in large] + [0.0] * n_fp
    hd95 = [r["hd95"] if r["matched"] else PARSER_HD95 for r in large] + [PARSER_HD95] * n_fp
    finite = [h for h in hd95 if not math.isinf(h)]
    if not large:
        out.update(dict.fromkeys([f"lesionwise_{m}_{s}" for m in ("dsc", "hd95", "nsd") for s in ("mean", "std")], NAN))
    else:
        out.update({"lesionwise_dsc_mean": float(np.mean(dsc)), "lesionwise_dsc_std": float(np.std(dsc)),
                    "lesionwise_hd95_mean": float(np.mean(finite)) if finite else PARSER_HD95,
                    "lesionwise_hd95_std": float(np.std(finite)) if finite else 0.0,
                    "lesionwise_nsd_mean": float(np.mean(nsd)), "lesionwise_nsd_std": float(np.std(nsd))})
    return out


def patient_row(row: dict, regions, records_by_region: dict[str, list[dict]], mets: bool) -> dict:
    """One patient's official columns from our row (``lesion_<metric>_<R>``, ``dice_<R>``...) and lesion records."""
    out = {"subject_id": row["patient"]}
    for region in regions:
        key = region.lower()
        scores = {m: row[f"lesion_{m}_{region}"] for m in ("tp", "fp", "fn", "precision", "recall", "f1", "dice",
                                                           "nsd", "hd95")}
        out.update({f"all_instance_{name}_{key}": scores[ours] for name, ours in _INSTANCE})
        if mets:
            out.update({f"{k}_{key}": v
                        for k, v in mets_region(records_by_region.get(region, [])).items()})
        else:
            out.update({f"{k}_{key}": v for k, v in _lesion_stats(records_by_region.get(region, []), scores).items()})
        out.update({f"{k}_{key}": v for k, v in _global(row, region).items()})
    return out


def missing_row(subject: str, columns: list[str]) -> dict:
    """A subject the parser lists as missing: 373 in HD95 columns (not their std), 0 elsewhere."""
    return {"subject_id": subject, **{c: (PARSER_HD95 if "hd95" in c and "std" not in c else 0) for c in columns}}


def cohort_rows(rows: list[dict], columns: list[str]) -> list[dict]:
    """The parser's ``mean``, ``std`` (ddof 1) and ``median`` rows: NaN skipped, infinities kept (pandas)."""
    stats = {"mean": {}, "std": {}, "median": {}}
    for column in columns:
        values = np.array([float(r[column]) for r in rows if r.get(column) is not None], dtype=float)
        values = values[~np.isnan(values)]
        with np.errstate(invalid="ignore"):
            stats["mean"][column] = float(np.mean(values)) if values.size else NAN
            stats["std"][column] = float(np.std(values, ddof=1)) if values.size > 1 else NAN
            stats["median"][column] = float(np.median(values)) if values.size else NAN
    return [{"subject_id": name, **values} for name, values in stats.items()]


def official_csv(rows: list[dict], regions, missing: list[str], mets: bool, lesions_key: str) -> str:
    """The whole file: patients, missing subjects, then mean / std / median (empty cell for NaN)."""
    table = []
    for row in rows:
        by_region: dict[str, list[dict]] = {}
        for lesion in row.get(lesions_key, ()):
            by_region.setdefault(lesion["region"], []).append(lesion)
        table.append(patient_row(row, regions, by_region, mets))
    columns = [c for c in table[0] if c != "subject_id"] if table else []
    table += [missing_row(subject, columns) for subject in missing]
    table += cohort_rows(table, columns) if table else []
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["subject_id"] + columns, lineterminator="\n")
    writer.writeheader()
    for entry in table:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in entry.items()})
    return out.getvalue()
