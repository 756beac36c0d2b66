"""Randomised multi-lesion cases and the call to the official BraTS 2026 package (the test oracle).

The oracle runs in ``.oracle-venv`` (``make oracle``) through
``tests/evaluation/brats_oracle.py``, one subprocess per batch of cases; the
tests skip with the make target to run when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORACLE_PYTHON = os.path.join(ROOT, ".oracle-venv", "bin", "python")
RUNNER = os.path.join(ROOT, "tests", "evaluation", "brats_oracle.py")

# Official config -> (our challenge, label values the config knows).
CONFIGS = {"gli": ("brats2024_gli", (1, 2, 3, 4)), "ped": ("brats2024_ped", (1, 2, 3, 4)),
           "mets": ("brats2025_met", (1, 2, 3, 4)), "MenRT": ("brats2024_men_rt", (1,))}
SHAPE = (40, 36, 30)


def needs_oracle():
    """Skip (naming the make target) when the official package's venv is not there."""
    if not os.path.exists(ORACLE_PYTHON):
        pytest.skip("the official BraTS 2026 package is not installed: run `make oracle`")


def _blob(shape, rng, labels) -> np.ndarray:
    """A lesion: an ellipsoid of one label, sometimes with a core of another (multi-tissue lesions)."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    centre = [rng.integers(4, n - 4) for n in shape]
    radii = rng.uniform(1.0, 4.5, size=3)
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    out = np.zeros(shape, np.uint8)
    out[dist <= 1.0] = rng.choice(labels)
    if len(labels) > 1 and rng.random() < 0.6:
        out[dist <= 0.35] = rng.choice(labels)
    return out


def random_case(seed: int, labels, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(truth, prediction) label volumes: several lesions; the prediction shifts, drops, splits and adds some."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(2, 7)):
        blob = _blob(shape, rng, labels)
        truth[blob > 0] = blob[blob > 0]
    pred = np.roll(truth, int(rng.integers(-1, 2)), axis=int(rng.integers(0, 3)))
    for _ in range(rng.integers(0, 3)):  # false positives
        blob = _blob(shape, rng, labels)
        pred[blob > 0] = blob[blob > 0]
    ids = np.unique(truth[truth > 0])
    if ids.size and rng.random() < 0.5:  # a tissue missed
        pred[pred == rng.choice(ids)] = 0
    if rng.random() < 0.3:  # a cut through everything
        pred[:, :, shape[2] // 2] = 0
    return truth, pred


def run_oracle(batch: dict, workdir) -> dict:
    """The runner's JSON for ``batch`` (see brats_oracle.py), arrays written under ``workdir``."""
    needs_oracle()
    for case in batch.get("arrays", []):
        for key in ("pred", "ref"):
            if not isinstance(case[key], str):
                path = os.path.join(str(workdir), f"{case['id']}_{key}.npy")
                np.save(path, case[key])
                case[key] = path
    path = os.path.join(str(workdir), "batch.json")
    with open(path, "w") as handle:
        json.dump(batch, handle)
    done = subprocess.run([ORACLE_PYTHON, RUNNER, path], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise AssertionError(f"the oracle failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
