"""Write a synthetic BraTS cohort of any challenge (demo input, tests and N4 benchmark data).

Example:

    python -m synthetic.generate --output_dir=/tmp/synth --num_patients=12

writes /tmp/synth/BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz
..., /tmp/synth/name_mapping.csv, and the true bias fields under
/tmp/synth/bias_fields/.  ``--challenge=brats2024_gli`` writes GLI 2024 names
and labels (RC included) on its MNI grid; ``--challenge=brats2024_men_rt
--spacing=1,1,3`` a T1c-only native-space cohort.  ``--output_dir`` may be a
gs:// path.  ``--hard`` writes the hard profile (synthetic/hard.py).  All the logic lives in ``synthetic.cohort``.
"""

from __future__ import annotations

import time

from absl import app, flags

from shared import challenges, cli
from synthetic import cohort as synthetic_data

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Cohort root to write (local path or gs://...).")
flags.DEFINE_integer("num_patients", 12, "Number of patients to generate (>= 1).")
flags.DEFINE_enum("challenge", synthetic_data.DEFAULT_CHALLENGE, list(challenges.CHALLENGES),
                  "Challenge whose folder and file naming, modalities and label numbering to write "
                  "(shared/challenges.py).")
flags.DEFINE_string(
    "shape", None,
    f"Volume shape x,y,z in voxels; every dimension >= {synthetic_data.MIN_DIM} (default: the challenge's "
    "grid, 240,240,155 for native-space challenges).",
)
flags.DEFINE_string("spacing", "1,1,1", "Voxel spacing x,y,z in mm written into the affine (e.g. 1,1,3 for a "
                    "thick-slice native-space scan).")
flags.DEFINE_integer("seed", 0, "Random seed (>= 0); the same seed gives byte-identical files.")
flags.DEFINE_float("lgg_fraction", 0.25, "Fraction of LGG patients, in [0, 1].")
flags.DEFINE_bool("compressed", True, "Write patient files as .nii.gz (true) or .nii (false, like the Kaggle mirror).")
flags.DEFINE_bool("hard", False, "The hard profile (synthetic/hard.py): varied head anatomy, multi-focal tumours in "
                  "a third, tumour contrast close to grey matter in some modalities, small enhancing parts, scanner "
                  "non-linearity and stronger bias fields.  Off: the default cohort, byte for byte.")
flags.mark_flag_as_required("output_dir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.num_patients < 1:
        raise app.UsageError(f"--num_patients must be >= 1, got {FLAGS.num_patients}")
    if FLAGS.seed < 0:
        raise app.UsageError(f"--seed must be >= 0, got {FLAGS.seed}")
    if not 0.0 <= FLAGS.lgg_fraction <= 1.0:
        raise app.UsageError(f"--lgg_fraction must be in [0, 1], got {FLAGS.lgg_fraction}")
    grid = challenges.get(FLAGS.challenge).grid
    try:
        shape = synthetic_data.parse_shape(FLAGS.shape or ",".join(map(str, grid.shape or synthetic_data.DEFAULT_SHAPE)))
    except ValueError as err:
        raise app.UsageError(f"--shape: {err}") from None
    try:
        spacing = tuple(float(v) for v in FLAGS.spacing.split(","))
        assert len(spacing) == 3 and min(spacing) > 0
    except (ValueError, AssertionError):
        raise app.UsageError(f"--spacing must be three positive numbers x,y,z, got {FLAGS.spacing!r}") from None

    grades = synthetic_data.assign_grades(FLAGS.num_patients, FLAGS.seed, FLAGS.lgg_fraction)
    start = last = time.perf_counter()

    def progress(done: int, total: int, patient_id: str) -> None:
        nonlocal last
        now = time.perf_counter()
        print(f"[{done}/{total}] {patient_id} {grades[done - 1]} {now - last:.1f}s", flush=True)
        last = now

    synthetic_data.write_cohort(
        FLAGS.output_dir,
        FLAGS.num_patients,
        shape=shape,
        seed=FLAGS.seed,
        lgg_fraction=FLAGS.lgg_fraction,
        compressed=FLAGS.compressed,
        progress=progress,
        challenge=FLAGS.challenge,
        spacing=spacing,
        hard=FLAGS.hard,
    )
    print(f"Wrote {FLAGS.num_patients} patients to {FLAGS.output_dir} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    cli.run(main)
