r"""Follow one prediction from ``python -m serving.predict`` to the written NIfTI: which modules it enters.

    python benchmarks/trace_prediction.py            # prints JSON

A tiny synthetic patient is preprocessed into a dataset, a small Keras model
is saved as a run folder of the layout trainers wrote before the run contract
(lineage.json + config.json + model.keras, which must keep loading), and the
command's ``main`` runs in this process under ``sys.setprofile``.  Every call
from one project module into another counts as an *entry* into the callee's
module.  A house whose prediction reads top-down enters each serving module
once (or once per patient); a module entered again and again is one that the
flow keeps coming back to.

Printed: the project modules in the order first entered, the number of
entries of each, how many files the prediction touched, and every call that
*comes back up*: a call into a module that is already on the stack further
out (a callback, or a method of an object a caller above made).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PACKAGES = ("shared", "preprocessing", "synthetic", "beam_pipeline", "trainer", "serving", "evaluation", "app")


def _project_module(frame) -> str | None:
    name = frame.f_globals.get("__name__", "")
    return name if name.split(".")[0] in PACKAGES else None


def _outer_modules(frame) -> set[str]:
    """The project modules on the stack from ``frame`` outwards: a call into one of them comes back up."""
    found = set()
    while frame is not None:
        module = _project_module(frame)
        if module:
            found.add(module)
        frame = frame.f_back
    return found


def _dataset(root: pathlib.Path) -> tuple[str, pathlib.Path]:
    """One tiny patient, preprocessed into a dataset version; returns (dataset dir, patient folder)."""
    from beam_pipeline import launch
    from configs.preprocess import synthetic_small
    from synthetic import cohort

    cohort.write_cohort(str(root / "cohort"), 2, shape=(48, 48, 40), seed=3)
    cfg = synthetic_small.get_config()
    cfg.crop.size = (32, 32, 32)
    cfg.min_brain_voxels = 200
    summary = launch.run(cfg.to_dict(), str(root / "cohort"), str(root / "datasets"), ["--runner=FnApiRunner"],
                         echo=lambda *_: None)
    patient = sorted(p for p in (root / "cohort").iterdir() if p.is_dir())[0]
    return summary.dataset_dir, patient


def _run_folder(root: pathlib.Path, dataset_dir: str) -> pathlib.Path:
    """A run folder as trainers wrote it before the run contract: lineage.json, config.json, model.keras."""
    import keras

    manifest = json.loads(pathlib.Path(dataset_dir, "manifest.json").read_text())
    run = root / "run"
    run.mkdir()
    (run / "lineage.json").write_text(json.dumps({"data_dir": dataset_dir, "version_id": manifest["version_id"],
                                                  "preprocess": manifest["config"]}))
    (run / "config.json").write_text(json.dumps({"patch_size": [16, 16, 16]}))
    image = keras.Input((None, None, None, 4), name="image")
    probs = keras.layers.Conv3D(4, 1, activation="softmax", name="probabilities")(image)
    keras.Model(image, probs).save(run / "model.keras")
    return run


def trace(argv: list[str]) -> dict:
    """Run serving.predict's main with ``argv`` under a profiler; count module entries."""
    from absl import flags

    from serving import predict

    flags.FLAGS(["predict", *argv])
    entries: collections.Counter = collections.Counter()
    edges: collections.Counter = collections.Counter()
    comebacks: collections.Counter = collections.Counter()
    order: list[str] = []

    def profile(frame, event, _arg):
        if event != "call":
            return
        callee = _project_module(frame)
        if callee is None:
            return
        caller, back = None, frame.f_back
        while back is not None and caller is None:
            caller = _project_module(back)
            back = back.f_back
        if caller != callee:
            entries[callee] += 1
            edges[f"{caller} -> {callee}.{frame.f_code.co_name}"] += 1
            if callee in _outer_modules(back):
                comebacks[f"{caller} -> {callee}.{frame.f_code.co_name}"] += 1
            if callee not in order:
                order.append(callee)

    sys.setprofile(profile)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
            predict.main(["predict"])
    finally:
        sys.setprofile(None)
    serving = {edge: n for edge, n in edges.items() if edge.split(" -> ")[1].startswith("serving.")}
    return {"order_first_entered": order, "entries": dict(entries), "modules_entered": len(order),
            "serving_entries": {m: n for m, n in entries.items() if m.startswith("serving.")},
            "calls_into_serving": serving, "calls_back_up": dict(comebacks)}


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        dataset_dir, patient = _dataset(root)
        run = _run_folder(root, dataset_dir)
        result = trace([f"--model={run / 'model.keras'}", f"--input={patient}", f"--output_dir={root / 'preds'}",
                        "--window=patch", "--tta=none"])
        result["written"] = sorted(p.name for p in (root / "preds").iterdir())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
