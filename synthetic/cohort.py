"""A synthetic BraTS cohort of any challenge: skull-stripped heads with a tumour each.

The cohort is the demo and test input of the data engine and the benchmark
data of N4 bias-field correction, so it imitates what matters to them:

* the folder layout, file names and label numbering of any challenge in
  :mod:`shared.challenges` (default BraTS 2020, with ``name_mapping.csv``
  grades), int16 voxels, the BraTS affine at 1 mm or any voxel spacing;
* a skull-stripped brain (background exactly 0, every brain voxel > 0) with
  CSF, grey and white matter in plausible relative contrasts per modality,
  mild texture, partial-volume smoothing and noise;
* a lesion nested the way gliomas are (necrosis / non-enhancing core,
  enhancing rim, oedema), plus a resection cavity where the challenge labels
  one (GLI 2024, MET 2025) and a cyst where it labels one (PED 2024), written
  in the challenge's own numbering so every label appears;
* a known smooth multiplicative bias field per modality, saved next to the
  cohort (``bias_fields/``), so N4's estimate can be scored against it.

Everything is a pure function of ``(seed, patient index, shape, grade)``
(``np.random.default_rng([seed, index])``), and files are written with
fixed gzip headers, so the same arguments give the same bytes: the data
engine's version ids, which hash the input files, are then reproducible.

All writes go through ``shared.storage``, so ``output_dir`` may be a
``gs://`` path.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import io
import math
import os
from typing import Callable, Sequence

import numpy as np

from shared.nifti_io import nifti_bytes as shared_nifti_bytes
from shared import challenges, layouts, storage
from shared.storage import write_bytes
from synthetic.anatomy import (CAVITY, CYST, ENHANCING, NECROSIS, NON_ENHANCING, OEDEMA, TISSUES, make_anatomy,
                               node_counts, random_field, unit_coords)
from synthetic import hard as hard_profile
from synthetic.intensities import apply_bias, bias_field, clean_image
from synthetic.lesion import add_cavity, add_cyst, place_lesion

MODALITIES = ("flair", "t1", "t1ce", "t2")
DEFAULT_CHALLENGE = "brats2020"
GRADES = ("HGG", "LGG")
DEFAULT_SHAPE = (240, 240, 155)
MIN_DIM = 32
BIAS_DIR = "bias_fields"
NAME_MAPPING = "name_mapping.csv"
NAME_MAPPING_COLUMNS = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)

# Which tissues each label key of the registry stands for.  Necrosis and
# non-enhancing tumour share the core label; a cyst is core unless the
# challenge labels cysts; the GTV of radiotherapy is the tumour without oedema.
_TISSUES_OF_LABEL = {
    "NCR": (NECROSIS, NON_ENHANCING, CYST), "NETC": (NECROSIS, NON_ENHANCING, CYST),
    "ED": (OEDEMA,), "SNFH": (OEDEMA,), "ET": (ENHANCING,), "RC": (CAVITY,), "CC": (CYST,),
    "GTV": (NECROSIS, NON_ENHANCING, ENHANCING, CYST),
}


def seg_lut(challenge: challenges.Challenge) -> np.ndarray:
    """Stored label of each tissue code in ``challenge``'s numbering (later labels win a shared tissue)."""
    lut = np.zeros(len(TISSUES), dtype=np.uint8)
    for label in challenge.labels:
        lut[list(_TISSUES_OF_LABEL[label.key])] = label.value
    return lut


_TEXTURE_AMPLITUDE = 0.03  # smooth tissue heterogeneity (fraction of intensity)
_TUMOUR_TEXTURE_AMPLITUDE = 0.08  # tumours are more heterogeneous than normal tissue

_GZIP_LEVEL = 1  # fast; level 9 costs ~5x the time for ~10 % smaller files


@dataclasses.dataclass
class SyntheticPatient:
    """One generated patient: what is written to disk, plus ground truth."""

    patient_id: str
    grade: str
    images: dict[str, np.ndarray]  # modality -> int16 volume (bias applied)
    seg: np.ndarray  # uint8, the challenge's labels (BraTS 2020: {0, 1, 2, 4})
    bias_fields: dict[str, np.ndarray]  # modality -> float32 multiplicative field
    brain_mask: np.ndarray  # bool
    affine: np.ndarray
    tissues: np.ndarray | None = None  # uint8 tissue codes (TISSUES), e.g. a WM mask for N4 metrics
    challenge: str = DEFAULT_CHALLENGE  # naming and label numbering of the files


# --------------------------------------------------------------------------
# Names, shapes, grades
# --------------------------------------------------------------------------


def patient_id_for(index: int, challenge: str = DEFAULT_CHALLENGE) -> str:
    """Id of the ``index``-th patient (1-based) in the challenge's naming: 1 -> BraTS20_Training_001."""
    if index < 1:
        raise ValueError(f"patient index must be >= 1, got {index}")
    return challenges.get(challenge).patient_id(index)


def validate_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """The shape as a 3-tuple of ints; ValueError if it is not 3-D or a side is < MIN_DIM.

    Below MIN_DIM voxels the brain is too small to hold its tissues and a
    lesion of a few voxels radius inside the lesion box.
    """
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be three integers, got {shape!r}") from None
    if len(dims) != 3:
        raise ValueError(f"shape must have three dimensions, got {len(dims)}: {shape!r}")
    if any(d < MIN_DIM for d in dims):
        raise ValueError(f"every shape dimension must be >= {MIN_DIM}, got {dims}")
    return dims  # type: ignore[return-value]


def parse_shape(text: str) -> tuple[int, int, int]:
    """Parse ``"240,240,155"`` (or ``240x240x155``) into a validated shape."""
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"shape must be three comma-separated integers, got {text!r}") from None
    return validate_shape(dims)


def brats_affine(shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The BraTS voxel-to-world affine for ``shape`` (LPS-flipped axes) at ``spacing`` mm (default 1 mm)."""
    sx, sy, sz = (float(v) for v in spacing)
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[1, 3] = (shape[1] - 1) * sy
    return affine


def assign_grades(num_patients: int, seed: int = 0, lgg_fraction: float = 0.25) -> list[str]:
    """Grade of patients 1..num_patients, deterministic in (num_patients, seed, lgg_fraction).

    About ``lgg_fraction`` of the cohort is LGG, but with four or more
    patients there is at least one LGG (if lgg_fraction > 0) and one HGG (if
    lgg_fraction < 1), so that grade-stratified splits work on tiny cohorts.
    The LGG patients are a prefix of a seed-dependent permutation, so raising
    lgg_fraction only turns more HGG patients into LGG.
    """
    if num_patients < 1:
        raise ValueError(f"num_patients must be >= 1, got {num_patients}")
    if not 0.0 <= lgg_fraction <= 1.0:
        raise ValueError(f"lgg_fraction must be in [0, 1], got {lgg_fraction}")
    num_lgg = int(math.floor(lgg_fraction * num_patients + 0.5))
    if num_patients >= 4:
        if lgg_fraction > 0:
            num_lgg = max(num_lgg, 1)
        if lgg_fraction < 1:
            num_lgg = min(num_lgg, num_patients - 1)
    order = np.random.default_rng([seed, num_patients, 0x6ADE]).permutation(num_patients)
    lgg = set(order[:num_lgg].tolist())
    return ["LGG" if i in lgg else "HGG" for i in range(num_patients)]


# --------------------------------------------------------------------------
# Patients
# --------------------------------------------------------------------------


def make_patient(
    patient_id: str,
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    grade: str = "HGG",
    seed: int = 0,
    challenge: str = DEFAULT_CHALLENGE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    hard: bool = False,
) -> SyntheticPatient:
    """Generate one patient; a pure function of (seed, index, shape, grade, challenge, spacing, hard)."""
    patient, _ = synthesize(patient_id, index, shape, grade, seed, challenge, spacing, hard)
    return patient


def synthesize(
    patient_id: str,
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    grade: str = "HGG",
    seed: int = 0,
    challenge: str = DEFAULT_CHALLENGE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    hard: bool = False,
) -> tuple[SyntheticPatient, dict[str, np.ndarray]]:
    """Like make_patient, also returning the clean (bias-free) float32 images.

    The clean images let tests and benchmarks check that each stored image is
    exactly ``apply_bias(clean, bias, brain)``.  ``hard``: the hard profile
    (``synthetic.hard``), drawn from its own stream so default patients keep their bytes.
    """
    shape = validate_shape(shape)
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    entry = challenges.get(challenge)
    rng = np.random.default_rng([seed, index])

    anatomy = make_anatomy(rng, shape)
    window, lesion = place_lesion(rng, shape, anatomy, grade)
    keys = {label.key for label in entry.labels}
    if "RC" in keys:
        add_cavity(rng, lesion)
    if "CC" in keys:
        add_cyst(lesion)
    extra = bool(keys & {"RC", "CC"})
    profile = _hard_lesions(seed, index, shape, grade, anatomy, window, lesion, entry.modalities) if hard else None
    tumour = lesion > 0
    if profile is None:
        anatomy.tissues[window][tumour] = lesion[tumour]
    box, tissues = anatomy.box, anatomy.tissues
    brain = anatomy.depth < 1

    coords = unit_coords(shape, box)
    texture = 1 + _TEXTURE_AMPLITUDE * random_field(rng, node_counts(shape, (n // 8 for n in shape)), coords)
    unit = (np.arange(lesion.shape[0]) + 0.5) / lesion.shape[0]
    tumour_noise = random_field(rng, (6, 6, 6), (unit, unit, unit))
    tumour_texture = 1 + _TUMOUR_TEXTURE_AMPLITUDE * tumour_noise * tumour

    full_brain = np.zeros(shape, dtype=bool)
    full_brain[box] = brain
    full_tissues = np.zeros(shape, dtype=np.uint8)
    full_tissues[box] = tissues
    seg = seg_lut(entry)[full_tissues]

    images, bias_fields, cleans = {}, {}, {}
    if profile is not None:
        profile, warp_rng = profile
        warp = hard_profile.make_warp(warp_rng, shape)
        full_tissues = warp.labels(full_tissues)
        full_brain = full_tissues != hard_profile.BG
        seg = seg_lut(entry)[full_tissues]
    for modality in entry.modalities:
        adjust = None
        if profile is not None and profile.overlap[modality] > 0:
            adjust = functools.partial(hard_profile.overlap_means, profile.overlap[modality], modality=modality)
        clean = clean_image(rng, modality, tissues, brain, texture, window, tumour_texture, extra, adjust)
        full_clean = np.zeros(shape, dtype=np.float32)
        full_clean[box] = clean
        if profile is None:
            bias = bias_field(rng, shape, box, brain)
            image = np.zeros(shape, dtype=np.int16)
            image[box] = apply_bias(clean, bias[box], brain)
        else:
            full_clean, bias, image = _hard_image(rng, profile, modality, warp, full_clean, full_brain)
        images[modality], bias_fields[modality], cleans[modality] = image, bias, full_clean

    patient = SyntheticPatient(
        patient_id=patient_id,
        grade=grade,
        images=images,
        seg=seg,
        bias_fields=bias_fields,
        brain_mask=full_brain,
        affine=brats_affine(shape, spacing),
        tissues=full_tissues,
        challenge=challenge,
    )
    return patient, cleans


def _hard_lesions(seed, index, shape, grade, anatomy, window, lesion, modalities):
    """The hard profile's changes to the tissue map (in place), its draws, and the rng of the steps after.

    Ventricles grow, the enhancing rim may turn patchy, and a third of the
    patients get a second tumour placed like the first.
    """
    rng = hard_profile.hard_rng(seed, index)
    profile = hard_profile.draw_profile(rng, modalities, shape)
    hard_profile.enlarge_ventricles(anatomy.tissues, anatomy.depth, profile.ventricle_growth)
    lesions = [(window, lesion)]
    if profile.multifocal:
        try:
            lesions.append(place_lesion(rng, shape, anatomy, "LGG" if grade == "LGG" else grade))
        except RuntimeError:  # no room for a second tumour in a tiny brain: stays uni-focal
            pass
    for where, tissue in lesions:
        if profile.patchy_enhancing and grade == "HGG":
            hard_profile.patchy_enhancing(rng, tissue)
        hard_profile.paste(anatomy.tissues, where, tissue)
    return profile, rng


def _hard_image(rng, profile, modality, warp, full_clean, full_brain):
    """A modality under the hard profile: warped head, scanner curve, stronger bias; (clean, bias, image)."""
    clean = warp.image(full_clean)
    clean = hard_profile.scanner_curve(clean, full_brain, profile.gamma[modality])
    np.maximum(clean, np.float32(2.0), out=clean, where=full_brain)
    clean *= full_brain
    shape = full_clean.shape
    bias = bias_field(rng, shape, hard_profile.whole_box(shape), full_brain)
    bias = hard_profile.stronger_bias(bias, profile.bias_power[modality], 2.0**-10)
    return clean, bias, apply_bias(clean, bias, full_brain)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def nifti_bytes(array: np.ndarray, affine: np.ndarray, compressed: bool = True) -> bytes:
    """NIfTI bytes as the project writes them, at a fast gzip level (cohorts are large)."""
    return shared_nifti_bytes(array, affine, compress=compressed, level=_GZIP_LEVEL)


def _ensure_dir(path: str) -> None:
    """mkdir -p on local paths; object stores (gs://, s3://) have no directories to make."""
    storage.makedirs(path)


_write = write_bytes


def patient_paths(output_dir: str, patient_id: str, compressed: bool = True,
                  challenge: str = DEFAULT_CHALLENGE) -> dict[str, str]:
    """Channel (modality, "seg", "<modality>_bias") -> path of each file of one patient."""
    ext = ".nii.gz" if compressed else ".nii"
    layout = layouts.get_layout(challenge)
    folder = storage.join(output_dir, patient_id)
    modalities = challenges.get(challenge).modalities
    paths = {c: storage.join(folder, layout.expected_name(patient_id, c, ext)) for c in modalities + ("seg",)}
    for m in modalities:
        paths[f"{m}_bias"] = storage.join(output_dir, BIAS_DIR, f"{patient_id}_{m}_bias.nii.gz")
    return paths


def write_patient(patient: SyntheticPatient, output_dir: str, compressed: bool = True) -> None:
    """Write the modalities and seg (the challenge's layout) and the true bias fields (always .nii.gz)."""
    paths = patient_paths(output_dir, patient.patient_id, compressed, patient.challenge)
    _ensure_dir(storage.join(output_dir, patient.patient_id))
    _ensure_dir(storage.join(output_dir, BIAS_DIR))
    modalities = tuple(patient.images)
    jobs = [(paths[m], patient.images[m], compressed) for m in modalities]
    jobs.append((paths["seg"], patient.seg.astype(np.uint8), compressed))
    jobs += [(paths[f"{m}_bias"], patient.bias_fields[m].astype(np.float32), True) for m in modalities]

    def write_one(job) -> None:
        path, array, gz = job
        _write(path, nifti_bytes(array, patient.affine, gz))

    # zlib releases the GIL: compressing the nine files in threads uses every core.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        list(pool.map(write_one, jobs))


def name_mapping_csv(patient_ids: Sequence[str], grades: Sequence[str]) -> str:
    """``name_mapping.csv`` text: BraTS 2020 columns, older-release ids "NA" (no such history)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(NAME_MAPPING_COLUMNS)
    for patient_id, grade in zip(patient_ids, grades):
        writer.writerow([grade, "NA", "NA", "NA", "NA", patient_id])
    return buffer.getvalue()


def write_cohort(
    output_dir: str,
    num_patients: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    lgg_fraction: float = 0.25,
    compressed: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    challenge: str = DEFAULT_CHALLENGE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    hard: bool = False,
) -> list[str]:
    """Generate and write patients 1..num_patients (plus name_mapping.csv for BraTS 2020); returns their ids.

    name_mapping.csv is written last, so its presence marks a complete cohort.
    ``progress(done, total, patient_id)`` is called after each patient.
    """
    shape = validate_shape(shape)
    grades = assign_grades(num_patients, seed, lgg_fraction)
    _ensure_dir(output_dir)
    ids = []
    for index in range(1, num_patients + 1):
        patient_id = patient_id_for(index, challenge)
        patient = make_patient(patient_id, index, shape, grades[index - 1], seed, challenge, spacing, hard)
        write_patient(patient, output_dir, compressed)
        ids.append(patient_id)
        if progress is not None:
            progress(index, num_patients, patient_id)
    if challenges.get(challenge).naming.grade_table == NAME_MAPPING:
        _write(storage.join(output_dir, NAME_MAPPING), name_mapping_csv(ids, grades).encode())
    return ids
