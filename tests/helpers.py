"""What the tests share besides fixtures: tiny configs, a way to run the real pipeline, and a stub model.

Fixtures are in ``tests/conftest.py``; tests import these names from here.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from beam_pipeline import launch  # noqa: E402
from configs.preprocess import synthetic_small  # noqa: E402

TINY_SHAPE = (48, 48, 40)
IN_PROCESS = ["--runner=FnApiRunner"]
MULTI_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def override(cfg, overrides: dict):
    """Set dotted config fields (``{"crop.size": (32, 32, 32)}``) as --config.x=... would."""
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def tiny_config(**overrides) -> dict:
    """The synthetic config shrunk for 48x48x40 volumes, as a plain dict."""
    cfg = synthetic_small.get_config()
    cfg.crop.size = (32, 32, 32)
    cfg.min_brain_voxels = 200
    return override(cfg, overrides).to_dict()


def preprocess_volumes(folder, pid: str, volumes: dict, affine, **overrides):
    """Write ``volumes`` (channel -> array, ``seg`` included) as one BraTS 2020 patient in ``folder`` and run
    the core on it with :func:`tiny_config` (N4 off unless overridden): the core's result."""
    from preprocessing.discovery import PatientSource
    from preprocessing.patient import preprocess
    from shared import layouts
    from synthetic import cohort as synthetic_data

    layout = layouts.get_layout("brats2020")
    folder = pathlib.Path(folder) / pid
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for channel, array in volumes.items():
        path = folder / layout.expected_name(pid, channel)
        path.write_bytes(synthetic_data.nifti_bytes(array, affine))
        files[channel] = str(path)
    return preprocess(PatientSource(pid, "HGG", files, {}), tiny_config(**{"n4.enabled": False, **overrides}))


def run_pipeline(input_dir, output_dir, beam_args=IN_PROCESS, **overrides) -> launch.Summary:
    return launch.run(tiny_config(**overrides), str(input_dir), str(output_dir), list(beam_args), echo=lambda *_: None)


# Crop mode bbox shrunk for tiny volumes: records are the brain's box + 2, multiples of 8 (a tiny U-Net of
# depth 3 needs 4), so patients of different sizes give records of different shapes.
TINY_BBOX = {"crop.mode": "bbox", "crop.margin": 2, "crop.multiple": 8, "crop.min_size": (8, 8, 8),
             "n4.enabled": False}
# Patients' grids of a cohort of mixed sizes: the 32^3 heads' records (24x32x32) are smaller than a 32^3 patch.
MIXED_SHAPES = ((32, 32, 32), (48, 48, 40), (32, 32, 32), (64, 48, 40), (32, 32, 32), (40, 36, 32))


def write_mixed_cohort(root, shapes=MIXED_SHAPES, seed: int = 3) -> list[str]:
    """A BraTS 2020 cohort whose patients come on grids of ``shapes`` (one each); returns their ids."""
    from synthetic import cohort as synthetic_data

    ids, grades = [], []
    for index, shape in enumerate(shapes, 1):
        grade = "LGG" if index % 3 == 0 else "HGG"
        patient = synthetic_data.make_patient(synthetic_data.patient_id_for(index), index, shape, grade, seed=seed)
        synthetic_data.write_patient(patient, str(root))
        ids.append(patient.patient_id)
        grades.append(grade)
    (pathlib.Path(root) / synthetic_data.NAME_MAPPING).write_text(synthetic_data.name_mapping_csv(ids, grades))
    return ids


# ----------------------------------------------------------------------------- a stub model
#
# A trained model may leave a class empty, and "labels are a subset of
# {0, 1, 2, 4}" is then true of a pipeline that drops or mislabels it.  The
# stub answers every class, at voxels the test can compute from the
# preprocessed image: by the value of the first channel (flair), the same in
# every window, so sliding windows and flips do not change it.

STUB_SCALE = 40.0


def stub_classes(image):
    """The classes the stub model predicts for a preprocessed ``(X, Y, Z, C)`` image.

    |flair| < 0.05 (outside the brain is 0): background; flair < -0.5: class 1
    (necrotic core); > 0.5: class 3 (enhancing); otherwise class 2 (edema).
    """
    import numpy as np

    return np.argmax(_stub_logits(np.asarray(image, np.float32)[..., 0]), axis=-1).astype(np.uint8)


def _stub_logits(flair):
    import numpy as np

    pos, neg = np.maximum(flair, 0), np.maximum(-flair, 0)
    return np.stack([2 - STUB_SCALE * (pos + neg), STUB_SCALE * neg - 20, np.zeros_like(flair),
                     STUB_SCALE * pos - 20], axis=-1)


def build_stub_model(channels: int = 4):
    """A Keras model (built-in layers only, so it loads as any .keras file) computing :func:`stub_classes`."""
    import keras
    import numpy as np

    image = keras.Input((None, None, None, channels), name="image")
    split = keras.layers.Conv3D(2, 1, activation="relu", name="pos_neg")(image)
    logits = keras.layers.Conv3D(4, 1, name="logits")(split)
    probs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    model = keras.Model(image, probs, name="stub")
    first = np.zeros((1, 1, 1, channels, 2), np.float32)
    first[..., 0, :] = [1.0, -1.0]  # relu(flair), relu(-flair)
    second = np.array([[-STUB_SCALE, 0.0, 0.0, STUB_SCALE], [-STUB_SCALE, STUB_SCALE, 0.0, 0.0]], np.float32)
    model.get_layer("pos_neg").set_weights([first, np.zeros(2, np.float32)])
    model.get_layer("logits").set_weights([second.reshape(1, 1, 1, 2, 4), np.array([2.0, -20.0, 0.0, -20.0], np.float32)])
    return model


def write_stub_run(run, dataset_dir) -> str:
    """A run folder in ``run`` holding the stub as model.keras, trained 'on' ``dataset_dir`` (its lineage) with
    16^3 patches, written through the run contract; returns the model's path."""
    from shared import manifest as manifest_lib, trained_run

    manifest = manifest_lib.read_manifest(str(dataset_dir))
    trained_run.write_lineage(str(run), trained_run.Lineage(
        version_id=manifest["version_id"], data_dir=str(dataset_dir), preprocess=manifest["config"]))
    trained_run.write_config(str(run), {"patch_size": [16, 16, 16]})
    build_stub_model().save(trained_run.model_file(str(run)))
    return trained_run.model_file(str(run))


@contextlib.contextmanager
def local_dask_client():
    """A fresh 2-worker Dask LocalCluster on 127.0.0.1 (skips without ``distributed``), always closed."""
    import pytest

    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
