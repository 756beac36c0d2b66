"""Input-pipeline throughput: the seeds' NIfTI generator vs our tf.data over TFRecords.

    python benchmarks/bench_input.py [--patients=8] [--batches=30] [--rounds=3] [--workdir=bench_data/input]

Progress goes to stderr; one JSON object, the results, goes to stdout.

Data (prepared under ``--workdir`` once and reused while it is complete):

* a synthetic BraTS 2020 cohort at 240x240x155 (``synthetic_data.write_cohort``);
* two dataset versions of 144^3 records built from it by ``beam_pipeline.launch.run``
  with ``configs/preprocess/brats2020.py`` changed to ``n4.enabled=False`` (N4 does
  not change input speed and costs minutes) and ``modalities=(flair, t1ce, t2)``
  (the seeds' three channels), runner ``--runner=FnApiRunner``: one with
  ``shards.compression=NONE`` (uncompressed ``.tfrecord``, the layout recommended
  for training on CPU-scarce hosts) and one with the default ``GZIP``;
  both hold the same records;
* the seeds' on-disk format written from the same records (``schema.decode``):
  ``{pid}_{flair,t1ce,t2}.nii`` float32 144^3 and ``{pid}_seg.nii`` uint8
  (144, 144, 144, 4), uncompressed, identity affine, as the seeds saved them.

Measured (every measurement builds a fresh iterator, runs one warm-up pass over
the training patients, so the files are page-cached and tf.data's autotuner
has settled, then times ``--batches`` batches of 2; CPU seconds are this
process's, all threads; nothing consumes the batches; before the rounds, one
untimed run of each side absorbs the process's one-off costs: XLA
compilation and the allocator's first growth):

* side by side, ``--rounds`` times in alternation: ``seed_generator``, the
  seeds' ``data_generator`` verbatim (nib.load + get_fdata of 3 float32 .nii +
  the one-hot seg per patient, batch 2), and ``tfdata`` ``primary``,
  ``trainer.data.train_dataset`` over the NONE version exactly as training
  runs it (no cache: records are streamed from the page-cached shard files
  every step; default augmentation: 128^3 patch, foreground share 0.33, flips
  on 3 axes, per-channel intensity scale/shift; float32 image and float32
  one-hot mask, batch 2; ``--full_augment``: also every nnU-Net-style
  transform at its probability, ``trainer.augment.FULL_AUGMENT``).  The reported figures are the medians over rounds,
  and ``ratio_tfdata_over_seed`` is the ratio of the medians (target >= 3);
* once each: the same pipeline over the GZIP version; over NONE with the
  image ops unfused (``AugmentConfig.xla=False``); with a 144^3 patch (whole
  volume, still flips and intensity); ``trainer.data.val_dataset`` over the
  training shards (whole volumes, no augmentation: the seeds' generator's
  work, like for like);
* ``stages``: cumulative pipelines per layout, read (+ inflate for GZIP) only,
  + parse (``schema.parse_tf`` as the trainer calls it), and the full
  pipeline; the share of the full pipeline's CPU seconds per volume taken by
  read/decompress, parse and augment+batch (wall-time shares too);
* ``layout``: bytes per patient of both layouts and of the seeds' .nii files,
  and a one-line ``recommendation``.

TensorFlow runs with its caching CPU allocator (``TF_CPU_ALLOCATOR_USE_BFC``,
as ``trainer`` sets it); the seeds' generator runs numpy on glibc malloc, as
the seeds did.  Before each side-by-side measurement (and before the
secondary ones), the script waits (up to ``--idle_wait_s``) for other
processes to leave the cores idle, and it reports how much CPU the rest of
the machine used during each measurement (``other_processes_cpu_s``) and in
all (``environment.other_processes_cpu_s``, waits included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # as trainer/__init__.py; read at TF's first allocation

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

SHAPE = (240, 240, 155)
SEED_MODALITIES = ("flair", "t1ce", "t2")
BATCH = 2
COMPLETE = ".complete"
TARGET_RATIO = 3.0
MB = 1e6


log = common.make_log("bench_input")


# --------------------------------------------------------------------------
# Data preparation (cached under the workdir)
# --------------------------------------------------------------------------


def prepare_cohort(workdir: str, patients: int) -> str:
    """The synthetic 240x240x155 cohort; generated only if its name_mapping.csv is missing."""
    from synthetic import cohort as synthetic_data

    cohort = os.path.join(workdir, f"cohort_{patients}p")
    if os.path.exists(os.path.join(cohort, synthetic_data.NAME_MAPPING)):
        log(f"reusing cohort {cohort}")
        return cohort
    log(f"writing a synthetic cohort of {patients} patients at {SHAPE} to {cohort}")
    synthetic_data.write_cohort(cohort, patients, shape=SHAPE, seed=0,
                                progress=lambda done, total, pid: log(f"  cohort {done}/{total} {pid}"))
    return cohort


def pipeline_config(compression: str) -> dict:
    """brats2020 config with N4 off, the seeds' three channels and the given shard compression."""
    from configs.preprocess import brats2020

    cfg = brats2020.get_config()
    cfg.n4.enabled = False
    cfg.modalities = SEED_MODALITIES
    cfg.shards.compression = compression
    return cfg.to_dict()


def prepare_dataset(workdir: str, cohort: str, compression: str) -> str:
    """Preprocess the cohort into a dataset version (launch.run reuses a complete one)."""
    from beam_pipeline import launch

    log(f"dataset version with shards.compression={compression}")
    summary = launch.run(pipeline_config(compression), cohort, os.path.join(workdir, "datasets"),
                         ["--runner=FnApiRunner"], echo=lambda m: log("  " + m))
    if summary.failures:
        raise RuntimeError(f"preprocessing failed for {summary.failed_patients} patient(s): {summary.failures}")
    return summary.dataset_dir


def all_shards(info) -> list[str]:
    """Every shard of the version (train and val), in manifest order."""
    return list(info.train_files) + list(info.val_files)


def write_seed_format(info, out_dir: str) -> None:
    """The seeds' uncompressed float32/uint8 .nii files, decoded from the same records."""
    import nibabel as nib
    import tensorflow as tf

    from shared import manifest as manifest_lib
    from shared import schema

    if os.path.exists(os.path.join(out_dir, COMPLETE)):
        log(f"reusing seed-format NIfTI files in {out_dir}")
        return
    os.makedirs(out_dir, exist_ok=True)
    log(f"writing the seeds' .nii format to {out_dir}")
    kind = manifest_lib.tf_compression_type(info.compression)
    for serialized in tf.data.TFRecordDataset(all_shards(info), compression_type=kind):
        record = schema.decode(serialized.numpy())
        for c, modality in enumerate(record.channels):
            image = np.ascontiguousarray(record.image[..., c], dtype=np.float32)
            nib.save(nib.Nifti1Image(image, np.eye(4)), os.path.join(out_dir, f"{record.patient_id}_{modality}.nii"))
        nib.save(nib.Nifti1Image(np.ascontiguousarray(record.mask, dtype=np.uint8), np.eye(4)),
                 os.path.join(out_dir, f"{record.patient_id}_seg.nii"))
    open(os.path.join(out_dir, COMPLETE), "w").close()


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def measure(iterator, items: int, volumes_of) -> dict:
    """Wall and process CPU seconds to pull ``items`` elements; volumes counted by ``volumes_of``."""
    volumes = 0
    others = common.OtherProcesses()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(items):
        volumes += volumes_of(next(iterator))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"volumes": volumes, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "volumes_per_s": round(volumes / wall, 3), "cpu_s_per_volume": round(cpu / volumes, 4),
            "other_processes_cpu_s": others.cpu_s()}


def warm_then_measure(make_iterator, warm_items: int, items: int, volumes_of) -> dict:
    """A fresh iterator, one warm-up pass (page cache, autotuning, XLA compile), then the timed run.

    The iterator is dropped afterwards, so its background threads stop before
    the next measurement starts (an idle tf.data iterator would otherwise keep
    prefetching into the next measurement's time).
    """
    iterator = make_iterator()
    for _ in range(warm_items):
        next(iterator)
    result = measure(iterator, items, volumes_of)
    del iterator
    import gc

    gc.collect()
    return result


def with_mb(result: dict, bytes_per_volume: float) -> dict:
    """Adds the MB/s of disk bytes the measured pipeline read."""
    result["bytes_per_volume"] = int(bytes_per_volume)
    result["mb_per_s"] = round(result["volumes_per_s"] * bytes_per_volume / MB, 1)
    return result


def median_of(results: list[dict]) -> dict:
    """The round with the median volumes/s, plus every round's volumes/s."""
    ordered = sorted(results, key=lambda r: r["volumes_per_s"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["rounds_volumes_per_s"] = [r["volumes_per_s"] for r in results]
    out["rounds_other_processes_cpu_s"] = [r["other_processes_cpu_s"] for r in results]
    return out


# --------------------------------------------------------------------------
# The seeds' generator
# --------------------------------------------------------------------------


def data_generator(images_dir, masks_dir, patient_ids, batch_size=2):
    """The seeds' generator, verbatim (seed 000, 'Create the custom data generator')."""
    import nibabel as nib

    while True:
        for i in range(0, len(patient_ids), batch_size):
            batch_patients = patient_ids[i:i + batch_size]
            X_batch = []
            Y_batch = []

            for patient_id in batch_patients:
                modalities = []
                for modality in ['flair', 't1ce', 't2']:
                    img_path = os.path.join(images_dir, f"{patient_id}_{modality}.nii")
                    img = nib.load(img_path).get_fdata()  # Shape: [H, W, D]
                    modalities.append(img)

                # Stack modalities
                stacked_img = np.stack(modalities, axis=3)
                X_batch.append(stacked_img)

                mask_path = os.path.join(masks_dir, f"{patient_id}_seg.nii")
                mask = nib.load(mask_path).get_fdata().astype(np.uint8)

                Y_batch.append(mask[..., :4])

            yield np.array(X_batch, dtype=np.float32), np.array(Y_batch, dtype=np.float32)


def bench_seed(seed_dir: str, patient_ids: list[str], batches: int) -> dict:
    """Volumes/s and MB/s of the seeds' generator over the training patients."""
    files = [os.path.join(seed_dir, f"{p}_{s}.nii") for p in patient_ids for s in (*SEED_MODALITIES, "seg")]
    bytes_per_volume = sum(os.path.getsize(f) for f in files) / len(patient_ids)
    warm = math.ceil(len(patient_ids) / BATCH)
    log(f"seed generator: {warm} warm-up + {batches} timed batches over {len(patient_ids)} patients")
    result = warm_then_measure(lambda: data_generator(seed_dir, seed_dir, patient_ids, batch_size=BATCH),
                               warm, batches, lambda b: b[0].shape[0])
    log(f"  {result['volumes_per_s']:.2f} volumes/s")
    return with_mb(result, bytes_per_volume)


# --------------------------------------------------------------------------
# tf.data
# --------------------------------------------------------------------------


def warm_items(info, per_item: int) -> int:
    """Elements of one pass over the training records, at least 5 (autotuning)."""
    return max(5, math.ceil(info.num_train / per_item))


def bytes_per_record(info, files) -> float:
    """Mean on-disk bytes per record (patient) of some of a version's shards."""
    import tensorflow as tf

    from shared import manifest as manifest_lib

    kind = manifest_lib.tf_compression_type(info.compression)
    records = sum(1 for f in files for _ in tf.data.TFRecordDataset(f, compression_type=kind))
    return sum(os.path.getsize(f) for f in files) / records if records else 0.0


def stage_dataset(info, stage: str):
    """Cumulative stages over the training shards: "read" (read + decompress) or "parse" (+ parse as training does)."""
    import tensorflow as tf

    from shared import manifest as manifest_lib
    from shared import schema

    kind = manifest_lib.tf_compression_type(info.compression)
    ds = tf.data.TFRecordDataset(list(info.train_files), compression_type=kind).repeat()
    if stage == "parse":
        ds = ds.map(lambda r: schema.parse_tf(r, image_dtype=tf.float16),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.prefetch(tf.data.AUTOTUNE)


def bench_train_dataset(info, patch: int, batches: int, bytes_per_volume: float, label: str, **aug_fields) -> dict:
    """trainer.data.train_dataset (no cache) with the default augmentation at a given cubic patch size."""
    from trainer import augment as augment_lib, data

    aug = augment_lib.AugmentConfig(patch_size=(patch,) * 3, **aug_fields)
    log(f"tf.data train_dataset, {label}: warm-up pass + {batches} timed batches")
    result = warm_then_measure(lambda: iter(data.train_dataset(info, BATCH, aug, seed=0)),
                               warm_items(info, BATCH), batches, lambda b: int(b[0].shape[0]))
    log(f"  {result['volumes_per_s']:.2f} volumes/s, {result['cpu_s_per_volume']:.3f} CPU-s per volume")
    result["compression"] = info.compression
    return with_mb(result, bytes_per_volume)


def bench_no_augment(info, batches: int, bytes_per_volume: float) -> dict:
    """``trainer.data.val_dataset`` over the training shards, repeated: whole volumes, parse + batch 2, no augmentation.

    The seeds' generator does exactly this much work (whole float32 volumes
    and float32 one-hot masks, no augmentation), so this is the like-for-like
    loader comparison.
    """
    import dataclasses

    from trainer import data

    log(f"tf.data val_dataset (no augmentation, {info.compression}), batch {BATCH}: "
        f"warm-up pass + {batches} timed batches")
    one_pass = dataclasses.replace(info, val_files=info.train_files)
    result = warm_then_measure(lambda: iter(data.val_dataset(one_pass, batch_size=BATCH).repeat()),
                               warm_items(info, BATCH), batches, lambda b: int(b[0].shape[0]))
    result["compression"] = info.compression
    return with_mb(result, bytes_per_volume)


def bench_stage(info, stage: str, volumes: int, bytes_per_volume: float) -> dict:
    """Throughput of one cumulative stage ("read" or "parse") over ``volumes`` records."""
    log(f"stage {stage} ({info.compression}): warm-up pass + {volumes} timed records")
    return with_mb(warm_then_measure(lambda: iter(stage_dataset(info, stage)), warm_items(info, 1), volumes,
                                     lambda _: 1), bytes_per_volume)


def stage_shares(read: dict, parse: dict, full: dict) -> dict:
    """Share of the full pipeline's per-volume time taken by read/decompress, parse and augment+batch.

    Stages are cumulative, so parse's share is (read+parse) - read and
    augment's is full - (read+parse).  CPU seconds per volume add up on a
    CPU-bound machine; wall-time shares are affected by overlap between
    parallel stages and may not sum to exactly the same split.
    """
    out = {}
    for key, name in (("cpu_s_per_volume", "cpu"), ("wall", "wall")):
        if key == "wall":
            r, p, f = (1 / read["volumes_per_s"], 1 / parse["volumes_per_s"], 1 / full["volumes_per_s"])
        else:
            r, p, f = read[key], parse[key], full[key]
        out[name] = {"read_decompress": round(r / f, 3), "parse": round((p - r) / f, 3),
                     "augment_batch": round((f - p) / f, 3)}
    return out


def recommendation(shares_gz: dict, gz: dict, raw: dict, bytes_gz: float, bytes_raw: float, bytes_seed: float,
                   ratio_raw: float, ratio_gz: float) -> str:
    """One line: should the record layout (float16, GZIP) change, judged from the numbers."""
    speedup = raw["volumes_per_s"] / gz["volumes_per_s"]
    cpu_saving = 1 - raw["cpu_s_per_volume"] / gz["cpu_s_per_volume"]
    facts = (f"gzip inflate is {shares_gz['cpu']['read_decompress']:.0%} of the GZIP pipeline's CPU time; "
             f"uncompressed shards run the full pipeline {speedup:.2f}x as fast ({cpu_saving:.0%} less CPU per "
             f"volume; {ratio_raw:.1f}x vs {ratio_gz:.1f}x the seeds' generator) at {bytes_raw / bytes_gz:.2f}x "
             f"the bytes ({bytes_raw / MB:.1f} vs {bytes_gz / MB:.1f} MB/patient; the seeds' .nii: "
             f"{bytes_seed / MB:.1f})")
    if speedup >= 1.25 or cpu_saving >= 0.25:
        return (f"Keep float16 images and uint8 one-hot masks. Write training copies with "
                f"shards.compression=NONE where disk is cheap and CPUs are scarce, keep GZIP (the default) for "
                f"archives and transfers: {facts}.")
    return f"Keep float16 + GZIP: {facts}, so compression costs little and saves disk and I/O."


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def environment() -> dict:
    """Machine and library versions."""
    import nibabel
    import tensorflow as tf

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__,
            "nibabel": nibabel.__version__,
            "tf_cpu_allocator": "BFC" if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true")
            else "default"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=8, help="synthetic patients in the cohort (default 8)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches of 2 per measurement (default 30)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="side-by-side rounds of the seeds' generator and the primary tf.data pipeline; "
                             "medians are reported (default 3)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench_data", "input"),
                        help="where the cohort, the datasets and the .nii files are cached (default bench_data/input)")
    parser.add_argument("--full_augment", action="store_true",
                        help="the primary pipeline with every augmentation on at nnU-Net's probabilities "
                             "(trainer.augment.FULL_AUGMENT: rotation, scaling, elastic, noise, blur, brightness, "
                             "contrast, low resolution, gamma) besides the default flips and intensity")
    parser.add_argument("--side_by_side_only", action="store_true",
                        help="only the side-by-side rounds (no GZIP, unfused, whole-volume or stage measurements)")
    parser.add_argument("--idle_wait_s", type=float, default=300,
                        help="before measuring, wait up to this long for other processes to leave the cores "
                             "idle (default 300; 0 to skip)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    from beam_pipeline import launch

    from shared import console

    console.configure_logging()
    workdir = os.path.abspath(args.workdir)
    cohort = prepare_cohort(workdir, args.patients)
    dirs = {c: prepare_dataset(workdir, cohort, c) for c in ("NONE", "GZIP")}

    from shared.manifest import read_manifest
    from trainer import augment as augment_lib, data

    raw_info, gz_info = data.open_dataset(dirs["NONE"]), data.open_dataset(dirs["GZIP"])
    seed_dir = os.path.join(workdir, "seed_nii", raw_info.version_id)
    write_seed_format(raw_info, seed_dir)
    train_ids = list(read_manifest(dirs["NONE"])["splits"]["train"]["patients"])
    prep_s = time.perf_counter() - start

    volumes = args.batches * BATCH
    raw_bpv, gz_bpv = bytes_per_record(raw_info, raw_info.train_files), bytes_per_record(gz_info, gz_info.train_files)
    bytes_raw = bytes_per_record(raw_info, all_shards(raw_info))
    bytes_gz = bytes_per_record(gz_info, all_shards(gz_info))
    env = environment()
    others, wall0 = common.OtherProcesses(), time.perf_counter()

    primary_aug = dict(augment_lib.FULL_AUGMENT) if args.full_augment else {}
    primary_label = "NONE shards, 128^3 patch" + (", full augmentation" if args.full_augment else "")
    # one untimed run of each first: the first tf.data run of a process also pays for XLA compilation, the
    # allocator's first growth and the autotuner's ramp-up (about half speed), which a training run pays once
    log("process warm-up: one untimed run of each side")
    warmup = {"seed_generator": bench_seed(seed_dir, train_ids, args.batches),
              "tfdata_primary": bench_train_dataset(raw_info, 128, args.batches, raw_bpv, "warm-up run",
                                                    **primary_aug)}
    seed_rounds, primary_rounds = [], []
    for r in range(args.rounds):
        log(f"side-by-side round {r + 1}/{args.rounds}")
        common.wait_for_idle(args.idle_wait_s, log)
        seed_rounds.append(bench_seed(seed_dir, train_ids, args.batches))
        common.wait_for_idle(args.idle_wait_s, log)
        primary_rounds.append(bench_train_dataset(raw_info, 128, args.batches, raw_bpv, primary_label, **primary_aug))
    seed, primary = median_of(seed_rounds), median_of(primary_rounds)
    if args.side_by_side_only:
        ratio = primary["volumes_per_s"] / seed["volumes_per_s"]
        log(f"tf.data ({primary_label}) {primary['volumes_per_s']:.2f} vs seeds' generator "
            f"{seed['volumes_per_s']:.2f} volumes/s: {ratio:.2f}x")
        print(json.dumps({"benchmark": "bench_input", "side_by_side_only": True, "primary_is": primary_label,
                          "augment": primary_aug, "rounds": args.rounds, "timed_batches": args.batches,
                          "seed_generator": seed, "tfdata_primary": primary, "ratio_tfdata_over_seed": round(ratio, 2),
                          "target_ratio": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO,
                          "other_processes_cpu_s": others.cpu_s(), "wall_s": round(time.perf_counter() - start, 1)},
                         indent=2))
        return 0
    common.wait_for_idle(args.idle_wait_s, log)
    gzip_full = bench_train_dataset(gz_info, 128, args.batches, gz_bpv, "GZIP shards, 128^3 patch")
    unfused = bench_train_dataset(raw_info, 128, args.batches, raw_bpv, "NONE shards, 128^3, xla=False", xla=False)
    whole = bench_train_dataset(raw_info, 144, args.batches, raw_bpv, "NONE shards, 144^3 patch")
    no_aug = bench_no_augment(raw_info, args.batches, raw_bpv)
    stages = {}
    for name, info, bpv, full in (("NONE", raw_info, raw_bpv, primary), ("GZIP", gz_info, gz_bpv, gzip_full)):
        read = bench_stage(info, "read", volumes, bpv)
        parse = bench_stage(info, "parse", volumes, bpv)
        stages[name] = {"read_decompress": read, "read_decompress_parse": parse, "full_pipeline_patch128": full,
                        "share_of_full_pipeline": stage_shares(read, parse, full)}

    env["measurement_wall_s"] = round(time.perf_counter() - wall0, 1)  # includes the waits for idle cores
    env["other_processes_cpu_s"] = others.cpu_s()
    env["other_processes_note"] = common.OtherProcesses.NOTE
    ratio = primary["volumes_per_s"] / seed["volumes_per_s"]
    ratio_gz = gzip_full["volumes_per_s"] / seed["volumes_per_s"]
    result = {
        "benchmark": "bench_input",
        "method": ("each measurement: fresh iterator, one warm-up pass over the training patients (files "
                   "page-cached, tf.data autotuned, XLA compiled), then the timed batches; volumes/s = volumes "
                   "pulled / wall seconds; cpu_s = process CPU seconds, all threads; nothing consumes the "
                   f"batches (no model); seeds' generator and the primary pipeline alternate for {args.rounds} "
                   "rounds and their medians are compared"),
        "settings": {"patients": args.patients, "timed_batches": args.batches, "rounds": args.rounds,
                     "batch_size": BATCH, "cohort_shape": SHAPE,
                     "record_shape": list(raw_info.volume_shape) + [len(raw_info.channels)],
                     "channels": raw_info.channels, "n4": False, "runner": "FnApiRunner",
                     "tfdata_cache": False},
        "datasets": {c: {"dir": i.data_dir, "version_id": i.version_id, "train_patients": i.num_train,
                         "val_patients": i.num_val, "train_shards": len(i.train_files)}
                     for c, i in (("NONE", raw_info), ("GZIP", gz_info))},
        "environment": env,
        "data_preparation_s": round(prep_s, 1),
        "seed_generator": seed,
        "tfdata": {
            "primary": primary,
            "primary_is": ("trainer.data.train_dataset as training runs it: uncached, streamed from uncompressed "
                           "(shards.compression=NONE) page-cached shards, 128^3 patch, default augmentation"),
            "process_warmup_runs_untimed": {k: v["volumes_per_s"] for k, v in warmup.items()},
            "gzip_patch128": gzip_full,
            "none_patch128_unfused": unfused,
            "none_patch144_whole_volume": whole,
            "none_no_augment_whole_volume": no_aug,
            "augment": ("default AugmentConfig: 128^3 patch, foreground_share 0.33, flips on 3 axes, intensity "
                        "scale/shift 0.1/0.1 per channel, no rotation; float32 image and one-hot mask"
                        + (f"; primary (side by side) also {primary_aug}" if primary_aug else "")),
        },
        "stages": stages,
        "layout": {
            "bytes_per_patient": {"gzip": int(bytes_gz), "uncompressed": int(bytes_raw),
                                  "uncompressed_over_gzip": round(bytes_raw / bytes_gz, 2),
                                  "seed_nii": seed["bytes_per_volume"]},
            "full_speedup_uncompressed_over_gzip": round(primary["volumes_per_s"] / gzip_full["volumes_per_s"], 2),
            "read_parse_speedup_uncompressed": round(stages["NONE"]["read_decompress_parse"]["volumes_per_s"]
                                                     / stages["GZIP"]["read_decompress_parse"]["volumes_per_s"], 2),
        },
        "recommendation": recommendation(stages["GZIP"]["share_of_full_pipeline"], gzip_full, primary, bytes_gz,
                                         bytes_raw, seed["bytes_per_volume"], ratio, ratio_gz),
        "ratio_tfdata_over_seed": round(ratio, 2),
        "ratio_tfdata_gzip_over_seed": round(ratio_gz, 2),
        "ratio_no_augment_over_seed": round(no_aug["volumes_per_s"] / seed["volumes_per_s"], 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    log(f"tf.data {primary['volumes_per_s']:.2f} vs seeds' generator {seed['volumes_per_s']:.2f} volumes/s: "
        f"{ratio:.2f}x (GZIP shards {ratio_gz:.2f}x); other processes used {env['other_processes_cpu_s']} CPU s")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
