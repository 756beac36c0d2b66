"""Tests of the synthetic BraTS cohort generator (synthetic.cohort).

Real code on tiny volumes; one test runs the default 240x240x155 shape once.
"""

from __future__ import annotations

import csv
import gzip
import os
import pathlib
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # plain `pytest` puts tests/, not the repository root, on sys.path
    sys.path.insert(0, str(ROOT))

from synthetic import anatomy, intensities, lesion  # noqa: E402
from synthetic import cohort as sd  # noqa: E402

SHAPE = (48, 48, 40)


@pytest.fixture(scope="module")
def hgg():
    return sd.synthesize(sd.patient_id_for(1), 1, SHAPE, "HGG", seed=0)


@pytest.fixture(scope="module")
def full():
    """One patient at the BraTS shape (~1 s): lesion box and contrasts away from partial volume."""
    return sd.synthesize(sd.patient_id_for(7), 7, sd.DEFAULT_SHAPE, "HGG", seed=0)


@pytest.fixture(scope="module")
def lgg():
    return sd.synthesize(sd.patient_id_for(2), 2, SHAPE, "LGG", seed=0)


def _load(path: pathlib.Path) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(
        gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    )


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------


def test_patient_id_for():
    assert sd.patient_id_for(1) == "BraTS20_Training_001"
    assert sd.patient_id_for(42) == "BraTS20_Training_042"
    assert sd.patient_id_for(369) == "BraTS20_Training_369"
    with pytest.raises(ValueError):
        sd.patient_id_for(0)


def test_shapes_dtypes_affine(hgg):
    patient, _ = hgg
    assert patient.patient_id == "BraTS20_Training_001" and patient.grade == "HGG"
    assert set(patient.images) == set(sd.MODALITIES) == set(patient.bias_fields)
    for m in sd.MODALITIES:
        assert patient.images[m].shape == SHAPE and patient.images[m].dtype == np.int16
        assert patient.bias_fields[m].shape == SHAPE and patient.bias_fields[m].dtype == np.float32
    assert patient.seg.shape == SHAPE and patient.seg.dtype == np.uint8
    assert patient.brain_mask.shape == SHAPE and patient.brain_mask.dtype == bool
    expected = np.array([[-1, 0, 0, 0], [0, -1, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_array_equal(patient.affine, expected)
    np.testing.assert_array_equal(sd.brats_affine((240, 240, 155))[1, 3], 239)


def test_deterministic_and_seed_dependent():
    a = sd.make_patient("p", 3, SHAPE, "HGG", seed=5)
    b = sd.make_patient("p", 3, SHAPE, "HGG", seed=5)
    c = sd.make_patient("p", 3, SHAPE, "HGG", seed=6)
    d = sd.make_patient("p", 4, SHAPE, "HGG", seed=5)
    for m in sd.MODALITIES:
        np.testing.assert_array_equal(a.images[m], b.images[m])
        np.testing.assert_array_equal(a.bias_fields[m], b.bias_fields[m])
        assert not np.array_equal(a.images[m], c.images[m])
        assert not np.array_equal(a.images[m], d.images[m])
    np.testing.assert_array_equal(a.seg, b.seg)
    assert not np.array_equal(a.seg, c.seg)


@pytest.mark.parametrize("index", range(1, 9))
def test_seg_labels_and_tumour_inside_brain(index):
    for grade in sd.GRADES:
        patient = sd.make_patient("p", index, SHAPE, grade, seed=0)
        labels = set(np.unique(patient.seg).tolist())
        assert labels <= {0, 1, 2, 4}
        if grade == "HGG":
            assert labels == {0, 1, 2, 4}
        else:
            assert {0, 1, 2} <= labels
        tumour = patient.seg > 0
        assert np.all(patient.brain_mask[tumour]), "tumour voxel outside the brain"
        box = np.zeros(SHAPE, dtype=bool)
        box[lesion.lesion_box(SHAPE)] = True
        assert np.all(box[tumour]), "tumour voxel outside the lesion box"
        # Necrosis and enhancing tumour are enclosed: no core voxel touches the background.
        core = (patient.seg == 1) | (patient.seg == 4)
        assert not np.any(core & ~patient.brain_mask)


def test_lgg_often_lacks_enhancing_and_is_smaller():
    lacks, volumes = [], {"HGG": [], "LGG": []}
    for index in range(1, 31):
        lgg = sd.make_patient("p", index, SHAPE, "LGG", seed=1)
        lacks.append(not np.any(lgg.seg == 4))
        volumes["LGG"].append(np.count_nonzero(lgg.seg))
        if index <= 10:
            volumes["HGG"].append(np.count_nonzero(sd.make_patient("p", index, SHAPE, "HGG", seed=1).seg))
    assert 0.45 <= np.mean(lacks) <= 0.9
    assert np.mean(volumes["LGG"]) < np.mean(volumes["HGG"])


def test_background_zero_and_brain_positive(hgg, lgg):
    for patient, _ in (hgg, lgg):
        brain = patient.brain_mask
        for m in sd.MODALITIES:
            assert np.all(patient.images[m][~brain] == 0), m
            assert np.all(patient.images[m][brain] > 0), m
        assert np.all(patient.seg[~brain] == 0)


def test_brain_is_centred_and_fills_most_of_the_plane(hgg):
    patient, _ = hgg
    brain = patient.brain_mask
    for axis, (lo, hi) in enumerate([(0.5, 0.75), (0.6, 0.85), (0.6, 0.95)]):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(brain.any(axis=other))
        extent = (present[-1] - present[0] + 1) / SHAPE[axis]
        assert lo <= extent <= hi, (axis, extent)
        assert present[0] > 0 and present[-1] < SHAPE[axis] - 1  # never touches the volume edge
        centre = (present[0] + present[-1]) / 2
        assert abs(centre - (SHAPE[axis] - 1) / 2) < 0.1 * SHAPE[axis]
    tissues = patient.tissues[brain]
    for code in (anatomy.CSF, anatomy.GM, anatomy.WM):
        assert np.mean(tissues == code) > 0.05, anatomy.TISSUES[code]


def test_tissue_contrasts(full):
    patient, clean = full
    tissues = patient.tissues

    def median(m, code):
        # Away from tissue edges: partial-volume blur mixes thin CSF with its neighbours.
        pure = ndimage.binary_erosion(tissues == code, iterations=1)
        return float(np.median(clean[m][pure]))

    assert median("t1", anatomy.WM) > median("t1", anatomy.GM) > median("t1", anatomy.CSF)
    assert (median("t2", anatomy.CSF) > median("t2", anatomy.OEDEMA) > median("t2", anatomy.GM)
            > median("t2", anatomy.WM))
    assert (median("flair", anatomy.OEDEMA) > median("flair", anatomy.GM) > median("flair", anatomy.WM)
            > median("flair", anatomy.CSF))
    assert median("t1ce", anatomy.ENHANCING) > 1.5 * median("t1ce", anatomy.WM)
    for m in sd.MODALITIES:  # hundreds to a few thousands
        assert 50 < np.median(patient.images[m][patient.brain_mask]) < 5000
    # Textured, not piecewise constant.
    wm = clean["t1"][ndimage.binary_erosion(tissues == anatomy.WM, iterations=2)]
    assert 0.01 < wm.std() / wm.mean() < 0.15


def test_tiny_volume_contrasts(hgg):
    patient, clean = hgg
    tissues = patient.tissues

    def median(m, code):
        return float(np.median(clean[m][tissues == code]))

    assert median("t1", anatomy.WM) > median("t1", anatomy.GM) > median("t1", anatomy.CSF)
    assert median("t2", anatomy.OEDEMA) > median("t2", anatomy.WM)
    assert median("flair", anatomy.OEDEMA) > median("flair", anatomy.WM) > median("flair", anatomy.CSF)
    assert median("t1ce", anatomy.ENHANCING) > 1.5 * median("t1", anatomy.ENHANCING)


# --------------------------------------------------------------------------
# Bias field
# --------------------------------------------------------------------------


@pytest.mark.parametrize("index", [1, 2, 3])
def test_bias_field_range_mean_and_smoothness(index):
    patient = sd.make_patient("p", index, SHAPE, "HGG", seed=0)
    brain = patient.brain_mask
    for m in sd.MODALITIES:
        field = patient.bias_fields[m]
        assert np.all(np.isfinite(field)) and np.all(field > 0)
        inside = field[brain].astype(np.float64)
        assert 0.6 <= inside.min() <= 0.8, inside.min()
        assert 1.25 <= inside.max() <= 1.55, inside.max()
        assert abs(np.exp(np.log(inside).mean()) - 1) < 2e-3
        gradient = np.sqrt(sum(g**2 for g in np.gradient(np.log(field.astype(np.float64)))))
        # Smooth: the log-field changes by well under its span per voxel.
        assert gradient[brain].max() * min(SHAPE) < 4.0
    # Fields of different modalities differ (independent coils/sequences).
    assert not np.allclose(patient.bias_fields["t1"], patient.bias_fields["t2"])


def test_image_is_rounded_clean_times_bias(hgg):
    patient, clean = hgg
    brain = patient.brain_mask
    for m in sd.MODALITIES:
        bias = patient.bias_fields[m]
        np.testing.assert_array_equal(patient.images[m], intensities.apply_bias(clean[m], bias, brain))
        expected = np.rint(clean[m][brain].astype(np.float64) * bias[brain])
        assert np.max(np.abs(patient.images[m][brain] - expected)) <= 1
        # Dividing out the true field flattens white matter.
        wm = patient.tissues == anatomy.WM
        raw = patient.images[m][wm].astype(np.float64)
        corrected = raw / bias[wm]
        assert corrected.std() / corrected.mean() < 0.9 * raw.std() / raw.mean(), m


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def test_write_patient_round_trip(tmp_path, hgg):
    patient, _ = hgg
    sd.write_patient(patient, str(tmp_path))
    pid = patient.patient_id
    folder = tmp_path / pid
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{pid}_{c}.nii.gz" for c in sd.MODALITIES + ("seg",)
    )
    for m in sd.MODALITIES:
        image = _load(folder / f"{pid}_{m}.nii.gz")
        assert image.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), patient.images[m])
        np.testing.assert_array_equal(image.affine, patient.affine)
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
        np.testing.assert_allclose(image.header.get_zooms(), (1.0, 1.0, 1.0))

        bias = _load(tmp_path / "bias_fields" / f"{pid}_{m}_bias.nii.gz")
        assert bias.get_data_dtype() == np.float32
        np.testing.assert_array_equal(np.asanyarray(bias.dataobj), patient.bias_fields[m])
        np.testing.assert_array_equal(bias.affine, patient.affine)
    seg = _load(folder / f"{pid}_seg.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(seg.dataobj), patient.seg)


def test_uncompressed_option(tmp_path, hgg):
    patient, _ = hgg
    sd.write_patient(patient, str(tmp_path), compressed=False)
    pid = patient.patient_id
    for c in sd.MODALITIES + ("seg",):
        path = tmp_path / pid / f"{pid}_{c}.nii"
        data = path.read_bytes()
        assert data[:2] != b"\x1f\x8b"  # not gzip
        assert not (tmp_path / pid / f"{pid}_{c}.nii.gz").exists()
        image = nib.Nifti1Image.from_bytes(data)
        expected = patient.seg if c == "seg" else patient.images[c]
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), expected)
    # Bias fields stay .nii.gz whatever the option.
    assert (tmp_path / "bias_fields" / f"{pid}_t1_bias.nii.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_file_bytes_reproducible(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        sd.write_cohort(str(tmp_path / name), 2, shape=SHAPE, seed=seed)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 5 + 2 * 4 + 1
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    t1 = pathlib.Path("BraTS20_Training_001") / "BraTS20_Training_001_t1.nii.gz"
    assert (tmp_path / "a" / t1).read_bytes() != (tmp_path / "c" / t1).read_bytes()


def test_write_cohort_layout_and_name_mapping(tmp_path):
    calls = []
    ids = sd.write_cohort(
        str(tmp_path), 4, shape=SHAPE, seed=3, lgg_fraction=0.25, progress=lambda *a: calls.append(a)
    )
    assert ids == [f"BraTS20_Training_00{i}" for i in range(1, 5)]
    assert calls == [(i, 4, ids[i - 1]) for i in range(1, 5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ids + ["bias_fields", "name_mapping.csv"])
    assert len(list((tmp_path / "bias_fields").iterdir())) == 4 * 4
    with open(tmp_path / "name_mapping.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [
            "Grade",
            "BraTS_2017_subject_ID",
            "BraTS_2018_subject_ID",
            "TCGA_TCIA_subject_ID",
            "BraTS_2019_subject_ID",
            "BraTS_2020_subject_ID",
        ]
        rows = list(reader)
    assert [r["BraTS_2020_subject_ID"] for r in rows] == ids
    grades = [r["Grade"] for r in rows]
    assert grades == sd.assign_grades(4, seed=3, lgg_fraction=0.25)
    assert set(grades) == {"HGG", "LGG"}
    for pid, grade in zip(ids, grades):
        seg = np.asanyarray(_load(tmp_path / pid / f"{pid}_seg.nii.gz").dataobj)
        if grade == "HGG":
            assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}


def test_assign_grades():
    assert sd.assign_grades(12, 0, 0.25) == sd.assign_grades(12, 0, 0.25)
    assert sd.assign_grades(12, 0, 0.25).count("LGG") == 3
    for n in range(4, 12):
        for seed in range(3):
            grades = sd.assign_grades(n, seed, 0.05)
            assert grades.count("LGG") >= 1 and grades.count("HGG") >= 1
    assert sd.assign_grades(8, 0, 0.0) == ["HGG"] * 8
    assert sd.assign_grades(8, 0, 1.0) == ["LGG"] * 8
    assert len({tuple(sd.assign_grades(12, s, 0.25)) for s in range(10)}) > 1
    with pytest.raises(ValueError):
        sd.assign_grades(0)
    with pytest.raises(ValueError):
        sd.assign_grades(4, 0, 1.5)


def test_smallest_and_odd_shapes():
    for shape in [(32, 32, 32), (64, 64, 64), (40, 56, 33)]:
        for index in range(1, 4):
            patient = sd.make_patient("p", index, shape, "HGG", seed=0)
            assert patient.images["t1"].shape == shape
            assert set(np.unique(patient.seg).tolist()) == {0, 1, 2, 4}
            assert np.all(patient.brain_mask[patient.seg > 0])


def test_bad_arguments_rejected():
    with pytest.raises(ValueError):
        sd.make_patient("p", 1, (31, 48, 48))
    with pytest.raises(ValueError):
        sd.make_patient("p", 1, (48, 48))
    with pytest.raises(ValueError):
        sd.make_patient("p", 1, SHAPE, grade="GBM")
    assert sd.parse_shape("240,240,155") == (240, 240, 155)
    with pytest.raises(ValueError):
        sd.parse_shape("240,240")
    with pytest.raises(ValueError):
        sd.parse_shape("a,b,c")


def test_default_shape_lesion_box(full):
    patient, _ = full
    assert patient.images["flair"].shape == (240, 240, 155)
    tumour = np.argwhere(patient.seg > 0)
    assert tumour.size
    assert tumour[:, 0].min() >= 48 and tumour[:, 0].max() < 192
    assert tumour[:, 1].min() >= 48 and tumour[:, 1].max() < 192
    assert tumour[:, 2].min() >= 5 and tumour[:, 2].max() < 149
    assert np.all(patient.brain_mask[patient.seg > 0])
    assert set(np.unique(patient.seg).tolist()) == {0, 1, 2, 4}
    for axis in (0, 1):
        present = np.flatnonzero(patient.brain_mask.any(axis=tuple(a for a in range(3) if a != axis)))
        assert 0.55 <= (present[-1] - present[0] + 1) / 240 <= 0.8


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, "-m", "synthetic.generate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_entry_point(tmp_path):
    out = tmp_path / "cohort"
    result = _run(f"--output_dir={out}", "--num_patients=2", "--shape=40,40,36", "--seed=1", "--compressed=false")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("[1/2] BraTS20_Training_001 ") and lines[0].endswith("s")
    assert lines[1].startswith("[2/2] BraTS20_Training_002 ")
    assert str(out) in lines[-1]
    assert (out / "BraTS20_Training_002" / "BraTS20_Training_002_t1ce.nii").exists()
    assert (out / "bias_fields" / "BraTS20_Training_002_t1ce_bias.nii.gz").exists()
    assert (out / "name_mapping.csv").exists()


@pytest.mark.parametrize("bad", ["--num_patients=0", "--shape=16,64,64"])
def test_entry_point_rejects_bad_arguments(tmp_path, bad):
    result = _run(f"--output_dir={tmp_path / 'x'}", bad)
    assert result.returncode != 0
    assert "must" in result.stderr or "must" in result.stdout
    assert not (tmp_path / "x").exists()
