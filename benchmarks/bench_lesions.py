"""Lesion-wise scoring speed: seconds per 240x240x155 patient, every region of each challenge.

    python benchmarks/bench_lesions.py [--repeats=5] [--reference]

Progress goes to stderr; one JSON object, the results, goes to stdout.

The case (made here, deterministic): a glioma-like tumour (oedema ellipsoid
around a necrotic core with an enhancing rim) and six metastasis-like
satellites of 8 to 1,200 voxels, two of them within the dilation of each
other; the prediction is the truth shifted by one voxel, with the rim one
voxel thicker, one satellite missed, two false positives (one small, one 60
voxels) and a satellite split in two.  Labels are written in each challenge's
own classes (the same tissue map; regions the challenge lacks are simply not
scored), so every challenge scores all of its regions.

Measured: ``evaluation.lesions.score_lesions`` (the challenge's default scheme,
and the 2026 matched scheme), median of ``--repeats`` runs after one warm-up.
``official_brats2026``: the whole 2026 scoring of one GLI 2024 patient
(every region: matched lesions and whole-region Dice/HD95/NSD) by this
project against the official package (brats-evaluation 0.0.10 on panoptica,
``make oracle``: its own venv, called through tests/evaluation/brats_oracle.py),
CPU seconds of each process, and their ratio (target: at most 0.6).
``--reference`` also times a literal transcription of the BraTS 2023 loop (one
full-volume dilation per lesion, scipy in place of cc3d) once, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402
from evaluation import components, lesions, schemes, scoring  # noqa: E402
from shared import challenges, metrics  # noqa: E402

log = common.make_log("bench_lesions")
SHAPE = (240, 240, 155)
CHALLENGES = ("brats2023_gli", "brats2024_gli", "brats2024_met", "brats2024_ped", "brats2024_men_rt")
# Tissue map: 1 core (NETC), 2 oedema (SNFH), 3 enhancing (ET).
CORE, OEDEMA, ENHANCING = 1, 2, 3


def _ellipsoid(centre, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _tissue_case() -> tuple[np.ndarray, np.ndarray]:
    """(truth, prediction) tissue maps with the features the module docstring lists."""
    truth = np.zeros(SHAPE, np.uint8)
    truth[_ellipsoid((120, 110, 80), (38, 30, 26))] = OEDEMA
    truth[_ellipsoid((122, 112, 80), (18, 15, 13))] = ENHANCING
    truth[_ellipsoid((122, 112, 80), (13, 10, 9))] = CORE
    satellites = [((60, 60, 40), (6, 6, 5)), ((66, 72, 40), (4, 4, 4)),  # close: one lesion after dilation
                  ((180, 170, 110), (5, 4, 4)), ((190, 60, 60), (2, 2, 2)),
                  ((60, 190, 120), (3, 3, 3)), ((200, 120, 30), (8, 7, 6))]
    for centre, radii in satellites:
        truth[_ellipsoid(centre, radii)] = ENHANCING
    pred = np.roll(truth, 1, axis=0)
    pred[_ellipsoid((123, 112, 80), (19, 16, 14)) & (pred == OEDEMA)] = ENHANCING  # thicker rim
    pred[_ellipsoid((181, 170, 110), (6, 5, 5))] = 0  # a satellite missed
    pred[200, 115:125, 25:35] = 0  # a satellite split in two
    pred[_ellipsoid((30, 200, 140), (2, 2, 2))] = ENHANCING  # small false positive
    pred[_ellipsoid((210, 210, 20), (3, 3, 2))] = OEDEMA  # larger false positive
    return truth, pred


def _classes(tissue: np.ndarray, challenge) -> np.ndarray:
    """The tissue map in the challenge's classes (tissues it does not have are dropped or folded)."""
    keys = challenge.class_keys
    out = np.zeros_like(tissue)
    wanted = {CORE: ("NETC", "NCR"), OEDEMA: ("SNFH", "ED"), ENHANCING: ("ET",)}
    for tissue_value, names in wanted.items():
        found = [keys.index(n) for n in names if n in keys]
        if found:
            out[tissue == tissue_value] = found[0]
        elif "GTV" in keys:
            out[tissue == tissue_value] = keys.index("GTV")
    return out


def _median_seconds(fn, repeats: int) -> tuple[float, list[float], float]:
    """Median wall seconds, every run's wall seconds, and median CPU seconds of this process.

    On a shared 2-core machine wall time grows with other jobs' load; CPU
    time (all threads of this process) mostly does not, so both are reported.
    """
    fn()  # warm-up: imports, allocator, page faults
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return round(statistics.median(times), 3), [round(t, 3) for t in times], round(statistics.median(cpu), 3)


def _reference_loop(pred: np.ndarray, truth: np.ndarray, dilation: int) -> None:
    """The 2023 reference procedure written out on the full volume (scipy for cc3d, our HD95)."""
    from scipy import ndimage

    zones, n = ndimage.label(ndimage.binary_dilation(truth, components.DILATION_STRUCTURE, iterations=dilation),
                             components.CONNECTIVITY_26)
    lesion_ids = zones * truth
    pred_ids, _ = ndimage.label(pred, components.CONNECTIVITY_26)
    for k in range(1, n + 1):
        lesion = lesion_ids == k
        zone = ndimage.binary_dilation(lesion, components.DILATION_STRUCTURE, iterations=dilation)
        hits = np.unique(pred_ids[zone])
        hit_mask = np.isin(pred_ids, hits[hits > 0])
        if hit_mask.any():
            metrics.hd95(hit_mask, lesion)


def _ours_2026(pred, truth, challenge) -> None:
    """What ``evaluate --scheme=brats2026`` computes per patient: lesions, whole regions (Dice, HD95, NSD),
    and the sensitivity, specificity and volumes the official package does not compute."""
    scoring.score_patient("p", pred, truth, challenge, (1.0, 1.0, 1.0), schemes.get("brats2026"))


def _official_2026(truth_tissue, pred_tissue, repeats: int) -> dict:
    """Ours against the official package, GLI 2024, every region, CPU seconds of each process."""
    oracle = os.path.join(ROOT, ".oracle-venv", "bin", "python")
    if not os.path.exists(oracle):
        return {"skipped": "no .oracle-venv: run `make oracle`"}
    challenge = challenges.get("brats2024_gli")
    truth, pred = _classes(truth_tissue, challenge), _classes(pred_tissue, challenge)
    truth[_ellipsoid((150, 80, 60), (5, 5, 4))] = challenge.class_of(4)  # a resection cavity: RC scored too
    pred[_ellipsoid((151, 80, 60), (5, 4, 4))] = challenge.class_of(4)
    _, _, ours_cpu = _median_seconds(lambda: _ours_2026(pred, truth, challenge), repeats)
    with tempfile.TemporaryDirectory() as work:
        np.save(os.path.join(work, "pred.npy"), pred)  # classes equal GLI 2024 label values
        np.save(os.path.join(work, "ref.npy"), truth)
        batch = {"timing": [{"id": "gli", "config": "gli", "pred": os.path.join(work, "pred.npy"),
                             "ref": os.path.join(work, "ref.npy"), "spacing": [1.0, 1.0, 1.0], "repeats": repeats}]}
        with open(os.path.join(work, "batch.json"), "w") as handle:
            json.dump(batch, handle)
        done = subprocess.run([oracle, os.path.join(ROOT, "tests", "evaluation", "brats_oracle.py"),
                               os.path.join(work, "batch.json")], capture_output=True, text=True, check=True)
    theirs = json.loads(done.stdout.strip().splitlines()[-1])["timing"]["gli"]["cpu_seconds"]
    return {"challenge": challenge.name, "regions": list(challenge.regions), "ours_cpu_s": ours_cpu,
            "official_cpu_s": round(theirs, 3), "ratio": round(ours_cpu / theirs, 3), "target_ratio": 0.6}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference", action="store_true", help="also time the literal reference loop once")
    parser.add_argument("--idle_wait_s", type=float, default=30.0)
    args = parser.parse_args(argv)
    truth_tissue, pred_tissue = _tissue_case()
    common.wait_for_idle(args.idle_wait_s, log)
    others = common.OtherProcesses()
    results = {}
    for name in CHALLENGES:
        challenge = challenges.get(name)
        truth, pred = _classes(truth_tissue, challenge), _classes(pred_tissue, challenge)
        found = lesions.score_lesions(pred, truth, challenge, (1.0, 1.0, 1.0))
        default_s, runs, default_cpu = _median_seconds(
            lambda: lesions.score_lesions(pred, truth, challenge, (1.0, 1.0, 1.0)), args.repeats)
        matched_s, _, matched_cpu = _median_seconds(
            lambda: lesions.score_lesions(pred, truth, challenge, (1.0, 1.0, 1.0), "brats2026"), args.repeats)
        results[name] = {"scheme": found.scheme, "regions": [r.region for r in found.regions],
                         "truth_lesions": {r.region: sum(1 for x in r.lesions if x["kind"] == "truth")
                                           for r in found.regions},
                         "seconds_per_patient": default_s, "runs": runs, "cpu_seconds_per_patient": default_cpu,
                         "seconds_per_patient_brats2026": matched_s, "cpu_seconds_per_patient_brats2026": matched_cpu}
        log(f"{name}: {default_s:.3f} s wall, {default_cpu:.3f} s CPU ({found.scheme}); "
            f"{matched_s:.3f} s wall, {matched_cpu:.3f} s CPU (brats2026)")
    results["official_brats2026"] = _official_2026(truth_tissue, pred_tissue, args.repeats)
    log(f"brats2026 against the official package: {results['official_brats2026']}")
    if args.reference:
        challenge = challenges.get("brats2023_gli")
        truth, pred = _classes(truth_tissue, challenge), _classes(pred_tissue, challenge)
        start = time.perf_counter()
        for region, classes in challenge.region_classes().items():
            _reference_loop(np.isin(pred, classes), np.isin(truth, classes), challenge.lesion_rules[region].dilation)
        results["reference_loop_brats2023_gli_s"] = round(time.perf_counter() - start, 2)
        log(f"literal reference loop (GLI 2023, WT/TC/ET): {results['reference_loop_brats2023_gli_s']} s")
    print(json.dumps({"shape": SHAPE, "results": results, "cpu_count": os.cpu_count(),
                      "machine": platform.machine(), "python": platform.python_version(),
                      "other_processes_cpu_s": others.cpu_s(), "other_processes_note": common.OtherProcesses.NOTE},
                     indent=2))


if __name__ == "__main__":
    main()
