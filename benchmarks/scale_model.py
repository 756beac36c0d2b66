"""Amdahl's law with measured parts: a job = serial parts + ceil(N / W) patients' time.

``bench_scale.py`` measures timelines; this module splits one timeline into
its parts, fits how each serial part grows (launch and manifest with the
number of patients N, start-up with the number of workers W), predicts the
wall time and efficiency of a large job, and checks the model by fitting on
the smaller cohorts and predicting the largest one measured.  Pure
arithmetic, no imports of the project, so the figures can be re-derived from
the printed inputs by hand.
"""

from __future__ import annotations

import math
import statistics

SERIAL_PARTS = ("launch_s", "startup_s", "manifest_s")
# apache/beam#26669: the DaskRunner stops scaling around 100-200 workers (its scheduler, one task per bundle).
DASK_CEILING_WORKERS = 200


def split_timeline(timeline: dict, patients: int, workers: int) -> dict:
    """One run's seconds: launch, start-up, per patient (on one worker) and manifest."""
    staged = timeline["staged"]
    first, last = staged[0], staged[-1]
    per_patient = workers * (last - first) / (patients - workers) if patients > workers else float("nan")
    return {"launch_s": round(timeline["planned"], 2),
            "startup_s": round(first - timeline["planned"] - per_patient, 2),
            "per_patient_s": round(per_patient, 3),
            "manifest_s": round(timeline["returned"] - last, 2)}


def line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope of y against x; a serial part never shrinks with N, so a
    negative slope (noise: other jobs on the machine) becomes 0 and the intercept the mean."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    slope = max(0.0, slope)
    return my - slope * mx, slope


def fit(runs: list[dict], big: dict | None) -> dict:
    """The model's inputs from the small runs (and the full-size one for per-patient costs)."""
    launch0, launch1 = line([(r["patients"], r["launch_s"]) for r in runs])
    manifest0, manifest1 = line([(r["patients"], r["manifest_s"]) for r in runs])
    by_workers = {w: [r for r in runs if r["workers"] == w] for w in sorted({r["workers"] for r in runs})}
    startup = {w: statistics.fmean(r["startup_s"] for r in rs) for w, rs in by_workers.items()}
    per_patient = {w: statistics.fmean(r["per_patient_s"] for r in rs) for w, rs in by_workers.items()}
    inputs = {"launch_s": [round(launch0, 2), round(launch1, 4)],
              "manifest_s": [round(manifest0, 2), round(manifest1, 4)],
              "startup_s_by_workers": {str(w): round(s, 2) for w, s in startup.items()},
              "per_patient_s_by_workers": {str(w): round(p, 3) for w, p in per_patient.items()},
              "note": "[a, b]: a + b * N for launch and manifest"}
    if big:
        n = big["patients"]
        inputs["full_size"] = {
            "shape": big["shape"], "per_patient_s": big["per_patient_s"], "startup_s": big["startup_s"],
            "launch_per_patient_s": round(max(0.0, (big["launch_s"] - launch0) / n), 4),
            # a few full-size patients cannot show the slope under the noise: never below the small cohorts'
            "manifest_per_patient_s": round(max(manifest1, (big["manifest_s"] - manifest0) / n), 4)}
    return inputs


def wall(inputs: dict, patients: int, workers: int, per_patient: float | None = None, full_size: bool = True,
         startup: float | None = None) -> dict:
    """Predicted seconds of each part, their total and the efficiency for N patients on W workers.

    At scale each worker has its own cores, so a worker's start-up and a
    patient's seconds are the one-worker figures (two workers on this 2-core
    machine slow each other; that is not a property of more machines).
    """
    big = inputs.get("full_size") if full_size else None
    launch_slope = big["launch_per_patient_s"] if big else inputs["launch_s"][1]
    manifest_slope = big["manifest_per_patient_s"] if big else inputs["manifest_s"][1]
    if per_patient is None:
        per_patient = big["per_patient_s"] if big else inputs["per_patient_s_by_workers"]["1"]
    if startup is None:
        startup = big["startup_s"] if big else inputs["startup_s_by_workers"]["1"]
    parts = {"launch_s": inputs["launch_s"][0] + launch_slope * patients,
             "startup_s": startup,
             "patients_s": math.ceil(patients / workers) * per_patient,
             "manifest_s": inputs["manifest_s"][0] + manifest_slope * patients}
    total = sum(parts.values())
    serial = {k: parts[k] for k in SERIAL_PARTS}
    return {**{k: round(v, 1) for k, v in parts.items()}, "wall_s": round(total, 1),
            "efficiency": round(patients * per_patient / (workers * total), 3),
            "largest_serial_part": max(serial, key=serial.get)}


def predict(inputs: dict, patients: int = 1250, workers=(1, 8, 64, 256), vm_boot_s: float = 0.0) -> dict:
    """A BraTS 2021-sized job (1,250 patients at full size) on each worker count.

    ``vm_boot_s`` adds a cloud VM's boot to the measured worker start-up (not
    measurable here; BUILD_NOTES states the figure it assumes).
    """
    startup = (inputs["full_size"]["startup_s"] if "full_size" in inputs
               else inputs["startup_s_by_workers"]["1"]) + vm_boot_s
    out = {str(w): wall(inputs, patients, w, startup=startup) for w in workers}
    for w, row in out.items():
        if int(w) > DASK_CEILING_WORKERS:
            row["dask"] = f"beyond the DaskRunner's ~{DASK_CEILING_WORKERS}-worker ceiling: Dataflow only"
    return out


def holdout(runs: list[dict]) -> list[dict]:
    """Fit on all but the largest cohort, predict its wall time per worker count, compare with the measurement."""
    largest = max(r["patients"] for r in runs)
    inputs = fit([r for r in runs if r["patients"] < largest], None)
    rows = []
    for r in (r for r in runs if r["patients"] == largest):
        per_patient = inputs["per_patient_s_by_workers"][str(r["workers"])]
        startup = inputs["startup_s_by_workers"][str(r["workers"])]
        predicted = wall(inputs, largest, r["workers"], per_patient, full_size=False, startup=startup)["wall_s"]
        rows.append({"patients": largest, "workers": r["workers"], "predicted_wall_s": predicted,
                     "measured_wall_s": round(r["wall_s"], 1),
                     "error_pct": round(100 * (predicted - r["wall_s"]) / r["wall_s"], 1)})
    return rows
