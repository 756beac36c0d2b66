"""Runs the official BraTS 2026 package (brats-evaluation, in .oracle-venv) on a batch of cases; prints JSON.

Run by the tests with the oracle's own Python, never imported by the product
or by pytest (AGPL; its pins clash with ours):

    .oracle-venv/bin/python tests/evaluation/brats_oracle.py <batch.json>

``batch.json``: ``{"arrays": [{"id", "config", "pred", "ref", "spacing"}],
"files": [{"id", "config", "ref_dir", "pred_dir", "mets": bool}]}`` where
``pred``/``ref`` are ``.npy`` label volumes.  ``arrays`` calls
``Panoptica_Evaluator.evaluate`` on the arrays with the given spacing;
``files`` runs the ``brats-evaluate`` command and ``brats-parse-metrics seg``
(``mets`` instead when asked) as a user would (their console-script entry
points, in this process), and returns the summary JSON and
the parsed CSV rows; ``timing`` (same keys as ``arrays``, plus ``repeats``)
times the library call (benchmarks/bench_lesions.py).  One process for the whole batch keeps the tests fast.
"""

import csv
import json
import os
import sys
import tempfile
from importlib.resources import files

import numpy as np
from panoptica import Panoptica_Evaluator


def _evaluator(config: str, cache: dict):
    if config not in cache:
        path = str(files("brats_evaluation").joinpath("configs", f"config_{config}.yaml"))
        cache[config] = Panoptica_Evaluator.load_from_config(path)
    return cache[config]


def _arrays(case: dict, cache: dict) -> dict:
    evaluator = _evaluator(case["config"], cache)
    found = evaluator.evaluate(np.load(case["pred"]), np.load(case["ref"]),
                               voxelspacing=tuple(case["spacing"]), verbose=False)
    return {group: result.to_dict(True) for group, result in found.items()}


def _rows(path: str) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _command(name: str, argv: list[str]) -> None:
    """Run a console script of the package (``brats-evaluate``, ``brats-parse-metrics``) as the command
    does: its entry point with ``sys.argv`` set, in this process (one start-up for the whole batch);
    its printing goes to stderr so stdout carries only the JSON."""
    from contextlib import redirect_stdout
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == name]
    saved = sys.argv
    sys.argv = [name, *argv]
    try:
        with redirect_stdout(sys.stderr):
            script.load()()
    finally:
        sys.argv = saved


def _files(case: dict) -> dict:
    out = tempfile.mkdtemp(prefix="oracle_")
    summary = os.path.join(out, "summary.json")
    _command("brats-evaluate", ["--config", case["config"], "--ref_path", case["ref_dir"],
                                "--pred_path", case["pred_dir"], "--summary_json", summary])
    found = {"summary": json.load(open(summary))}
    kind = "mets" if case.get("mets") else "seg"
    target = os.path.join(out, f"{kind}.csv")
    _command("brats-parse-metrics", [kind, "--json_path", summary, "--output_csv_path", target])
    found[kind] = _rows(target)
    return found


def _timing(case: dict, cache: dict) -> dict:
    """CPU seconds (this process) of the library call on arrays: median of ``repeats`` after one warm-up."""
    import statistics
    import time

    evaluator = _evaluator(case["config"], cache)
    pred, ref = np.load(case["pred"]), np.load(case["ref"])
    evaluator.evaluate(pred, ref, voxelspacing=tuple(case["spacing"]), verbose=False)
    cpu = []
    for _ in range(case.get("repeats", 3)):
        start = time.process_time()
        evaluator.evaluate(pred, ref, voxelspacing=tuple(case["spacing"]), verbose=False)
        cpu.append(time.process_time() - start)
    return {"cpu_seconds": statistics.median(cpu), "runs": cpu}


def main(path: str) -> None:
    batch = json.load(open(path))
    cache = {}
    result = {"arrays": {c["id"]: _arrays(c, cache) for c in batch.get("arrays", [])},
              "files": {c["id"]: _files(c) for c in batch.get("files", [])},
              "timing": {c["id"]: _timing(c, cache) for c in batch.get("timing", [])}}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
