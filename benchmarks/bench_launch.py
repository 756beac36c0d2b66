"""Launcher seconds before a job starts: listing and fingerprinting a cohort, local and in a bucket.

    python benchmarks/bench_launch.py [--sizes=250,500,1000,2000] [--file_kb=20] [--no_gcs]

(or ``make bench-launch``).  Progress goes to stderr; one JSON object goes to stdout.

For each cohort size (tiny patients: four modalities and a segmentation of
``--file_kb`` KB of random bytes each; discovery never parses them) it times,
side by side in one run:

* ``plan``: ``beam_pipeline.launch.plan_dataset``, everything the launcher does
  before the job starts (list the folders, match the files, fingerprint every
  input, split, code fingerprint, shard counts).  On gs:// the input MD5s come
  from the bucket's object listing; locally they are computed from the bytes.
* ``read_every_byte``: the checksum of every input computed from its bytes,
  which is what the launcher did before on every filesystem (it downloaded a
  bucket's cohort to the launching machine).

Locally on a temporary folder, and on gs:// against ``gcp-storage-emulator``
on 127.0.0.1 (``tests/gcs_emulator.py``; started here and stopped after).  The
emulator serves from this machine's memory, so its "download" is far cheaper
than a real bucket's over a network: the ratio here is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODALITIES = ("flair", "t1", "t1ce", "t2", "seg")


def log(message: str) -> None:
    print(f"[bench-launch {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_cohort(root: str, patients: int, file_kb: int, start: int = 0) -> None:
    """Patients ``start..patients-1`` in the BraTS 2020 layout, random bytes (threads: I/O bound)."""
    import concurrent.futures

    from shared import storage

    def one(index: int) -> None:
        pid = f"BraTS20_Training_{index + 1:04d}"
        for m in MODALITIES:
            storage.write_bytes(storage.join(root, pid, f"{pid}_{m}.nii.gz"), os.urandom(file_kb * 1024))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(start, patients)))


def measure(root: str, output: str) -> dict:
    from beam_pipeline import launch
    from preprocessing import discovery
    from shared import layouts
    from tests.conftest import tiny_config

    cfg = tiny_config()
    start = time.perf_counter()
    plan = launch.plan_dataset(cfg, root, output)
    plan_s = time.perf_counter() - start
    folders = discovery.list_patient_folders(root, layouts.get_layout("brats2020"))
    paths = [p for files in folders.values() for p in files]
    start = time.perf_counter()
    discovery.checksum_files(paths)  # no stored checksums: every byte read, as before
    read_s = time.perf_counter() - start
    return {"patients": len(plan.sources), "files": len(paths), "plan_s": round(plan_s, 2),
            "read_every_byte_s": round(read_s, 2), "ratio_read_over_plan": round(read_s / plan_s, 2)}


def run_sizes(root: str, output: str, sizes: list[int], file_kb: int) -> list[dict]:
    rows, written = [], 0
    for size in sizes:
        log(f"{root}: writing patients {written + 1}..{size}")
        write_cohort(root, size, file_kb, start=written)
        written = size
        row = measure(root, output)
        log(f"  {row}")
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="250,500,1000,2000", help="Cohort sizes, ascending (patients).")
    parser.add_argument("--file_kb", type=int, default=20, help="Size of each input file in KB.")
    parser.add_argument("--no_gcs", action="store_true", help="Skip the gs:// measurement on the emulator.")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_launch_") as tmp:
        results["local"] = run_sizes(os.path.join(tmp, "cohort"), os.path.join(tmp, "out"), sizes, args.file_kb)
    if not args.no_gcs:
        from tests.gcs_emulator import gcs_emulator

        with gcs_emulator(buckets=("bench",)):
            results["gcs_emulator"] = run_sizes("gs://bench/cohort", "gs://bench/out", sizes, args.file_kb)
    print(json.dumps({"benchmark": "launch", "file_kb": args.file_kb, "files_per_patient": len(MODALITIES),
                      "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
