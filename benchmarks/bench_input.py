"""Input-pipeline throughput: the seeds' NIfTI generator vs our tf.data over TFRecords.

    python benchmarks/bench_input.py [--patients=8] [--batches=20] [--workdir=bench_data/input]

Progress goes to stderr; one JSON object, the results, goes to stdout.

Data (prepared under ``--workdir`` once and reused while it is complete):

* a synthetic BraTS 2020 cohort at 240x240x155 (``synthetic_data.write_cohort``);
* a dataset version of 144^3 records built from it by ``beam_pipeline.launch.run``
  with ``configs/preprocess/brats2020.py`` changed to ``n4.enabled=False`` (N4 does
  not change input speed and costs minutes) and ``modalities=(flair, t1ce, t2)``
  (the seeds' three channels), runner ``--runner=FnApiRunner``;
* the seeds' on-disk format written from the SAME records (``schema.decode``):
  ``{pid}_{flair,t1ce,t2}.nii`` float32 144^3 and ``{pid}_seg.nii`` uint8
  (144, 144, 144, 4), uncompressed, identity affine, as the seeds saved them;
* uncompressed copies of the GZIP shards (same records, ``TFRecordWriter``
  without compression) for the layout comparison.

Measured (every pipeline first runs one warm-up pass over the training
patients, so the files are page-cached and tf.data's autotuner has settled;
then ``--batches`` batches of 2 are timed; CPU seconds are this process's, all
threads):

* ``seed_generator``: the seeds' ``data_generator`` verbatim (nib.load +
  get_fdata of 3 float32 .nii + the one-hot seg per patient, batch 2), volumes/s
  and MB/s of .nii bytes read;
* ``tfdata``: ``trainer.data.train_dataset`` (batch 2, default augmentation:
  128^3 patch, foreground share 0.33, flips, intensity) and the same with a 144^3
  patch (whole volume, still flips/intensity); volumes/s and MB/s of compressed
  shard bytes;
* ``stages``: cumulative pipelines over the GZIP shards, read+decompress only
  (``TFRecordDataset(files, "GZIP")``), + parse (``schema.parse_tf``), + augment +
  batch (the full ``train_dataset``); throughput of each and the share of the
  full pipeline's time (CPU seconds per volume, which add up on a CPU-bound
  machine; the wall-time shares are given too) taken by decompress, parse and
  augment;
* ``layout``: read and read+parse throughput and bytes per patient of the
  uncompressed shards vs the GZIP ones, the full augmented pipeline over the
  uncompressed shards, and a one-line ``recommendation``;
* ``tfdata.no_augment_whole_volume``: ``trainer.data.val_dataset`` over the
  training shards (whole volumes, parse, float32 mask, batch 2, no
  augmentation): the same work as the seeds' generator, like for like;
* ``ratio_tfdata_over_seed``: tf.data (128^3 patch) volumes/s over the seeds'
  generator volumes/s; the target is >= 3 (``ratio_no_augment_over_seed`` too).

Before measuring, the script waits (up to ``--idle_wait_s``) for other
processes to leave the cores idle, and reports how much CPU the rest of the
machine used while it measured (``environment.other_processes_cpu_s``).
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

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

SHAPE = (240, 240, 155)
SEED_MODALITIES = ("flair", "t1ce", "t2")
BATCH = 2
COMPLETE = ".complete"
TARGET_RATIO = 3.0
MB = 1e6


def log(message: str) -> None:
    """A progress line on stderr (stdout carries only the final JSON)."""
    print(f"[bench_input {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Data preparation (cached under the workdir)
# --------------------------------------------------------------------------


def prepare_cohort(workdir: str, patients: int) -> str:
    """The synthetic 240x240x155 cohort; generated only if its name_mapping.csv is missing."""
    from beam_pipeline import synthetic_data

    cohort = os.path.join(workdir, f"cohort_{patients}p")
    if os.path.exists(os.path.join(cohort, synthetic_data.NAME_MAPPING)):
        log(f"reusing cohort {cohort}")
        return cohort
    log(f"writing a synthetic cohort of {patients} patients at {SHAPE} to {cohort}")
    synthetic_data.write_cohort(cohort, patients, shape=SHAPE, seed=0,
                                progress=lambda done, total, pid: log(f"  cohort {done}/{total} {pid}"))
    return cohort


def pipeline_config() -> dict:
    """brats2020 config with N4 off and the seeds' three channels, as launch.run's dict."""
    from configs.preprocess import brats2020

    cfg = brats2020.get_config()
    cfg.n4.enabled = False
    cfg.modalities = SEED_MODALITIES
    return cfg.to_dict()


def prepare_dataset(workdir: str, cohort: str) -> str:
    """Preprocess the cohort into a dataset version (launch.run reuses a complete one)."""
    from beam_pipeline import launch

    summary = launch.run(pipeline_config(), cohort, os.path.join(workdir, "datasets"),
                         ["--runner=FnApiRunner"], echo=lambda m: log("  " + m))
    if summary.failures:
        raise RuntimeError(f"preprocessing failed for {summary.failed_patients} patient(s): {summary.failures}")
    return summary.dataset_dir


def all_shards(dataset_dir: str) -> list[str]:
    """Every shard of the version (train and val), in manifest order."""
    from shared.manifest import read_manifest, shard_paths

    manifest = read_manifest(dataset_dir)
    return [p for split in ("train", "val") for p in shard_paths(dataset_dir, manifest, split)]


def write_seed_format(dataset_dir: str, out_dir: str) -> None:
    """The seeds' uncompressed float32/uint8 .nii files, decoded from the same records."""
    import nibabel as nib
    import tensorflow as tf

    from shared import schema

    if os.path.exists(os.path.join(out_dir, COMPLETE)):
        log(f"reusing seed-format NIfTI files in {out_dir}")
        return
    os.makedirs(out_dir, exist_ok=True)
    log(f"writing the seeds' .nii format to {out_dir}")
    for serialized in tf.data.TFRecordDataset(all_shards(dataset_dir), compression_type="GZIP"):
        record = schema.decode(serialized.numpy())
        for c, modality in enumerate(record.channels):
            image = np.ascontiguousarray(record.image[..., c], dtype=np.float32)
            nib.save(nib.Nifti1Image(image, np.eye(4)), os.path.join(out_dir, f"{record.patient_id}_{modality}.nii"))
        nib.save(nib.Nifti1Image(np.ascontiguousarray(record.mask, dtype=np.uint8), np.eye(4)),
                 os.path.join(out_dir, f"{record.patient_id}_seg.nii"))
    open(os.path.join(out_dir, COMPLETE), "w").close()


def write_uncompressed(dataset_dir: str, out_dir: str) -> dict[str, str]:
    """Uncompressed copies of every shard (same records, same order); gz path -> copy path."""
    import tensorflow as tf

    mapping = {p: os.path.join(out_dir, os.path.basename(p)[: -len(".gz")]) for p in all_shards(dataset_dir)}
    if os.path.exists(os.path.join(out_dir, COMPLETE)):
        log(f"reusing uncompressed shards in {out_dir}")
        return mapping
    os.makedirs(out_dir, exist_ok=True)
    log(f"writing uncompressed copies of the shards to {out_dir}")
    for src, dst in mapping.items():
        with tf.io.TFRecordWriter(dst) as writer:
            for serialized in tf.data.TFRecordDataset(src, compression_type="GZIP"):
                writer.write(serialized.numpy())
    open(os.path.join(out_dir, COMPLETE), "w").close()
    return mapping


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def measure(iterator, items: int, volumes_of) -> dict:
    """Wall and process CPU seconds to pull ``items`` elements; volumes counted by ``volumes_of``."""
    volumes = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(items):
        volumes += volumes_of(next(iterator))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"volumes": volumes, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "volumes_per_s": round(volumes / wall, 3), "cpu_s_per_volume": round(cpu / volumes, 4)}


def warm_then_measure(iterator, warm_items: int, items: int, volumes_of) -> dict:
    """One warm-up pass (page cache, autotuning), then the timed run on the same iterator."""
    for _ in range(warm_items):
        next(iterator)
    return measure(iterator, items, volumes_of)


def with_mb(result: dict, bytes_per_volume: float) -> dict:
    """Adds the MB/s of disk bytes the measured pipeline read."""
    result["bytes_per_volume"] = int(bytes_per_volume)
    result["mb_per_s"] = round(result["volumes_per_s"] * bytes_per_volume / MB, 1)
    return result


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
    gen = data_generator(seed_dir, seed_dir, patient_ids, batch_size=BATCH)
    result = warm_then_measure(gen, warm, batches, lambda b: b[0].shape[0])
    return with_mb(result, bytes_per_volume)


# --------------------------------------------------------------------------
# tf.data
# --------------------------------------------------------------------------


def warm_items(info, per_item: int) -> int:
    """Elements of one pass over the training records, at least 5 (autotuning)."""
    return max(5, math.ceil(info.num_train / per_item))


def bytes_per_record(files) -> float:
    """Mean on-disk bytes per record (patient) of some shards, GZIP or uncompressed."""
    import tensorflow as tf

    records = sum(1 for f in files
                  for _ in tf.data.TFRecordDataset(f, compression_type="GZIP" if f.endswith(".gz") else ""))
    return sum(os.path.getsize(f) for f in files) / records if records else 0.0


def stage_dataset(files, compression: str, stage: str):
    """Cumulative stages over ``files``: "read" (read + decompress) or "parse" (+ schema.parse_tf)."""
    import tensorflow as tf

    from shared import schema

    ds = tf.data.TFRecordDataset(list(files), compression_type=compression).repeat()
    if stage == "parse":
        ds = ds.map(schema.parse_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.prefetch(tf.data.AUTOTUNE)


def train_like_dataset(files, compression: str, aug, seed: int = 0, shuffle_buffer: int = 16):
    """``trainer.data.train_dataset`` step for step, with the shards' compression as a parameter."""
    import tensorflow as tf

    from shared import schema
    from trainer import data

    files_ds = tf.data.Dataset.from_tensor_slices(list(files)).shuffle(len(files), seed=seed)
    ds = files_ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
                             cycle_length=min(4, len(files)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.shuffle(shuffle_buffer, seed=seed).repeat()
    ds = ds.map(schema.parse_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda ex, s: data.augment(ex, tf.cast(s % (2**31 - 1), tf.int32), aug),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def bench_train_dataset(info, patch: int, batches: int, bytes_per_volume: float) -> dict:
    """trainer.data.train_dataset with the default augmentation at a given cubic patch size."""
    from trainer import data

    aug = data.AugmentConfig(patch_size=(patch,) * 3)
    log(f"tf.data train_dataset, patch {patch}^3: warm-up pass + {batches} timed batches")
    it = iter(data.train_dataset(info, BATCH, aug, seed=0))
    result = warm_then_measure(it, warm_items(info, BATCH), batches, lambda b: int(b[0].shape[0]))
    return with_mb(result, bytes_per_volume)


def bench_no_augment(info, batches: int, bytes_per_volume: float) -> dict:
    """``trainer.data.val_dataset`` over the training shards, repeated: whole volumes, parse + batch 2, no augmentation.

    The seeds' generator does exactly this much work (whole float32 volumes
    and float32 one-hot masks, no augmentation), so this is the like-for-like
    loader comparison.
    """
    import dataclasses

    from trainer import data

    log(f"tf.data val_dataset (no augmentation), batch {BATCH}: warm-up pass + {batches} timed batches")
    ds = data.val_dataset(dataclasses.replace(info, val_files=info.train_files), batch_size=BATCH).repeat()
    result = warm_then_measure(iter(ds), warm_items(info, BATCH), batches, lambda b: int(b[0].shape[0]))
    return with_mb(result, bytes_per_volume)


def bench_stage(files, compression: str, stage: str, volumes: int, warm: int, bytes_per_volume: float) -> dict:
    """Throughput of one cumulative stage ("read" or "parse") over ``volumes`` records."""
    log(f"stage {stage} ({compression or 'uncompressed'}): warm-up pass + {volumes} timed records")
    it = iter(stage_dataset(files, compression, stage))
    return with_mb(warm_then_measure(it, warm, volumes, lambda _: 1), bytes_per_volume)


def stage_shares(read: dict, parse: dict, full: dict) -> dict:
    """Share of the full pipeline's per-volume time taken by decompress, parse and augment+batch.

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
        out[name] = {"decompress": round(r / f, 3), "parse": round((p - r) / f, 3), "augment_batch": round((f - p) / f, 3)}
    return out


def recommendation(shares: dict, gz: dict, raw: dict, bytes_gz: float, bytes_raw: float, ratio: float) -> str:
    """One line: should the record layout (float16, GZIP) change, judged from the numbers."""
    speedup = raw["volumes_per_s"] / gz["volumes_per_s"]
    cpu_saving = 1 - raw["cpu_s_per_volume"] / gz["cpu_s_per_volume"]
    decomp = shares["cpu"]["decompress"]
    facts = (f"gzip decompress is {decomp:.0%} of the pipeline's CPU time; uncompressed shards run the full "
             f"pipeline {speedup:.2f}x as fast ({cpu_saving:.0%} less CPU per volume) at "
             f"{bytes_raw / bytes_gz:.2f}x the bytes ({bytes_raw / MB:.1f} vs {bytes_gz / MB:.1f} MB/patient); "
             f"tf.data with gzip is {ratio:.1f}x the seeds' generator")
    if speedup >= 1.25 or cpu_saving >= 0.25:
        return (f"Offer uncompressed shards (keep float16) where disk is cheap: {facts}; on a CPU host "
                f"the input pipeline shares cores with training, so the CPU saved is training time.")
    return f"Keep float16 + GZIP: {facts}, so compression costs little and saves disk and I/O."


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def system_busy_cpu() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat; idle and iowait excluded)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait_s: float, busy_cores: float = 0.25, window_s: float = 3.0) -> float:
    """Waits up to ``max_wait_s`` until other processes use under ``busy_cores`` cores; returns seconds waited.

    On a 2-core machine another job doubles the timings; this script itself
    is idle while it waits, so all the busy time is someone else's.
    """
    start = time.perf_counter()
    while True:
        before = system_busy_cpu()
        time.sleep(window_s)
        busy = (system_busy_cpu() - before) / window_s
        waited = time.perf_counter() - start
        if busy < busy_cores or waited >= max_wait_s:
            if waited > window_s + 0.5 or busy >= busy_cores:
                log(f"waited {waited:.0f} s for the machine to be idle (now {busy:.2f} cores busy)")
            return round(waited, 1)


def environment() -> dict:
    """Machine, library versions and whether anything else was loading the cores."""
    import nibabel
    import tensorflow as tf

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__,
            "nibabel": nibabel.__version__}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=8, help="synthetic patients in the cohort (default 8)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches of 2 per measurement (default 20)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench_data", "input"),
                        help="where the cohort, dataset, .nii and uncompressed copies are cached "
                             "(default bench_data/input)")
    parser.add_argument("--idle_wait_s", type=float, default=300,
                        help="before measuring, wait up to this long for other processes to leave the cores "
                             "idle (default 300; 0 to skip)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    from beam_pipeline import launch

    launch.configure_logging()
    workdir = os.path.abspath(args.workdir)
    cohort = prepare_cohort(workdir, args.patients)
    dataset_dir = prepare_dataset(workdir, cohort)

    from trainer import data

    info = data.open_dataset(dataset_dir)
    seed_dir = os.path.join(workdir, "seed_nii", info.version_id)
    write_seed_format(dataset_dir, seed_dir)
    raw_map = write_uncompressed(dataset_dir, os.path.join(workdir, "uncompressed", info.version_id))
    from shared.manifest import read_manifest

    train_ids = list(read_manifest(dataset_dir)["splits"]["train"]["patients"])
    prep_s = time.perf_counter() - start

    volumes = args.batches * BATCH
    gz_files = list(info.train_files)
    raw_files = [raw_map[f] for f in gz_files]
    gz_bpv = bytes_per_record(gz_files)
    raw_bpv = bytes_per_record(raw_files)
    all_gz = list(raw_map)
    bytes_gz = bytes_per_record(all_gz)
    bytes_raw = bytes_per_record(list(raw_map.values()))
    warm = warm_items(info, 1)
    env = environment()
    env["idle_wait_s"] = wait_for_idle(args.idle_wait_s)
    busy0, own0, wall0 = system_busy_cpu(), time.process_time(), time.perf_counter()

    seed = bench_seed(seed_dir, train_ids, args.batches)
    tf128 = bench_train_dataset(info, 128, args.batches, gz_bpv)
    tf144 = bench_train_dataset(info, 144, args.batches, gz_bpv)
    no_aug = bench_no_augment(info, args.batches, gz_bpv)
    read_gz = bench_stage(gz_files, "GZIP", "read", volumes, warm, gz_bpv)
    parse_gz = bench_stage(gz_files, "GZIP", "parse", volumes, warm, gz_bpv)
    read_raw = bench_stage(raw_files, "", "read", volumes, warm, raw_bpv)
    parse_raw = bench_stage(raw_files, "", "parse", volumes, warm, raw_bpv)
    log(f"full augmented pipeline (128^3) over uncompressed shards: warm-up pass + {args.batches} timed batches")
    full_raw = with_mb(warm_then_measure(iter(train_like_dataset(raw_files, "", data.AugmentConfig((128,) * 3))),
                                         warm_items(info, BATCH), args.batches, lambda b: int(b[0].shape[0])), raw_bpv)

    measure_wall = time.perf_counter() - wall0
    env["measurement_wall_s"] = round(measure_wall, 1)
    env["other_processes_cpu_s"] = round(system_busy_cpu() - busy0 - (time.process_time() - own0), 1)
    env["other_processes_note"] = ("CPU seconds the rest of the machine used while the measurements ran; "
                                   "near 0 means nothing else competed for the cores")
    shares = stage_shares(read_gz, parse_gz, tf128)
    ratio = tf128["volumes_per_s"] / seed["volumes_per_s"]
    result = {
        "benchmark": "bench_input",
        "method": ("each pipeline first runs one warm-up pass over the training patients (files page-cached, "
                   "tf.data autotuned), then the timed batches; volumes/s = volumes pulled / wall seconds; "
                   "cpu_s = process CPU seconds, all threads; nothing consumes the batches (no model)"),
        "settings": {"patients": args.patients, "timed_batches": args.batches, "batch_size": BATCH,
                     "cohort_shape": SHAPE, "record_shape": list(info.volume_shape) + [len(info.channels)],
                     "channels": info.channels, "n4": False, "runner": "FnApiRunner"},
        "dataset": {"dir": dataset_dir, "version_id": info.version_id, "train_patients": info.num_train,
                    "val_patients": info.num_val, "train_shards": len(info.train_files),
                    "all_shards": len(all_gz)},
        "environment": env,
        "data_preparation_s": round(prep_s, 1),
        "seed_generator": seed,
        "tfdata": {"patch128": tf128, "patch144": tf144, "no_augment_whole_volume": no_aug,
                   "augment": "default AugmentConfig: foreground_share 0.33, flips, intensity 0.1/0.1, no rotation"},
        "stages": {"read_decompress": read_gz, "read_decompress_parse": parse_gz, "full_pipeline_patch128": tf128,
                   "share_of_full_pipeline": shares},
        "layout": {
            "bytes_per_patient": {"gzip": int(bytes_gz), "uncompressed": int(bytes_raw),
                                  "uncompressed_over_gzip": round(bytes_raw / bytes_gz, 2),
                                  "seed_nii": seed["bytes_per_volume"]},
            "gzip": {"read": read_gz, "read_parse": parse_gz, "full_patch128": tf128},
            "uncompressed": {"read": read_raw, "read_parse": parse_raw, "full_patch128": full_raw},
            "read_parse_speedup_uncompressed": round(parse_raw["volumes_per_s"] / parse_gz["volumes_per_s"], 2),
            "full_speedup_uncompressed": round(full_raw["volumes_per_s"] / tf128["volumes_per_s"], 2),
        },
        "recommendation": recommendation(shares, tf128, full_raw, bytes_gz, bytes_raw, ratio),
        "ratio_tfdata_over_seed": round(ratio, 2),
        "ratio_no_augment_over_seed": round(no_aug["volumes_per_s"] / seed["volumes_per_s"], 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
