"""From a cohort folder and a config to a finished dataset version.

The launcher discovers the patients, fingerprints their files into the
version id, assigns splits and shard counts, runs the Beam job (or notices
the version is already complete) and reads back the summary.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import discovery, sharding, splits
from beam_pipeline.pipeline import NAMESPACE, STAGING, Plan, build, shard_compression
from shared import labels, layouts
from shared.manifest import is_complete, join, read_manifest, version_id

# Config sections that change how the job runs, never the bytes it writes.
RUNTIME_SECTION = "runtime"


@dataclasses.dataclass
class Summary:
    name: str
    version_id: str
    dataset_dir: str
    patients: dict[str, int]  # per split
    failures: list[dict]
    warnings: dict
    wall_seconds: float
    already_complete: bool = False
    metrics: dict = dataclasses.field(default_factory=dict)

    @property
    def failed_patients(self) -> int:
        return len({f["patient"] for f in self.failures})


def fingerprinted_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != RUNTIME_SECTION}


def plan_dataset(cfg: dict, input_dir: str, output_dir: str, progress=None) -> Plan:
    """Discover, fingerprint and split; no heavy work yet."""
    shard_compression(cfg)  # an unknown shards.compression fails here, before any work
    layout = layouts.get_layout(cfg["layout"])
    cohort = discovery.discover(input_dir, layout, tuple(cfg["modalities"]), cfg["require_seg"], progress=progress)
    versioned = fingerprinted_config(cfg)
    vid = version_id(cohort.checksums, versioned)
    plan_split = splits.split_patients(
        {p.patient_id: p.grade for p in cohort.patients},
        cfg["split"]["val_fraction"], cfg["split"]["seed"], cfg["split"]["num_folds"],
    )
    for p in cohort.patients:
        p.split = plan_split.assignment[p.patient_id]
    crop = cfg["crop"]
    size = crop["size"] if crop["mode"] == "centered" else [b - a for a, b in crop["box"]]
    per_record = sharding.record_bytes_estimate(size, len(cfg["modalities"]), labels.NUM_CLASSES)
    target = int(cfg["shards"]["target_mb"] * 2**20)
    counts = {s: sharding.num_shards(sum(p.split == s for p in cohort.patients), per_record, target)
              for s in ("train", "val")}
    return Plan(
        name=cfg["name"], version_id=vid, dataset_dir=join(output_dir, cfg["name"], vid),
        config=versioned, runtime=dict(cfg[RUNTIME_SECTION]), input_dir=input_dir,
        sources=cohort.patients, discovery_failures=cohort.failures, checksums=cohort.checksums,
        shard_counts=counts, folds=plan_split.folds, stratified=plan_split.stratified,
    )


def _metrics(result) -> dict:
    out = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + (value or 0)
    for dist in query["distributions"]:
        value = dist.committed if dist.committed is not None else dist.attempted
        if value and value.count:
            out[dist.key.metric.name] = {"count": value.count, "mean": value.mean, "min": value.min, "max": value.max}
    return out


def summary_from_manifest(dataset_dir: str, wall: float, already: bool, metrics=None) -> Summary:
    manifest = read_manifest(dataset_dir)
    return Summary(
        name=manifest["name"], version_id=manifest["version_id"], dataset_dir=dataset_dir,
        patients={s: len(v["patients"]) for s, v in manifest["splits"].items()},
        failures=manifest["failed"], warnings=manifest["warnings"], wall_seconds=wall,
        already_complete=already, metrics=metrics or {},
    )


def run(cfg: dict, input_dir: str, output_dir: str, beam_args: list[str], echo=print) -> Summary:
    """Build the dataset version for ``cfg`` (a plain dict of the config)."""
    start = time.time()
    echo(f"Discovering patients under {input_dir} (layout {cfg['layout']}) and checksumming their files...")
    plan = plan_dataset(cfg, input_dir, output_dir, progress=_progress_printer(echo))
    echo(f"{len(plan.sources)} patients to process, {len(plan.discovery_failures)} unusable folder(s); "
         f"version {plan.version_id} -> {plan.dataset_dir}")
    if is_complete(plan.dataset_dir):
        echo("This version is already complete; nothing to do.")
        return summary_from_manifest(plan.dataset_dir, time.time() - start, True)
    options = PipelineOptions(beam_args)
    with ProgressReporter(join(plan.dataset_dir, STAGING), len(plan.sources), echo):
        with beam.Pipeline(options=options) as root:
            build(root, plan)
    result = root.result  # set by the context manager after wait_until_finish
    return summary_from_manifest(plan.dataset_dir, time.time() - start, False, _metrics(result))


class ProgressReporter:
    """Prints how many patients are done while the job runs, from the staging area.

    Workers stage one file per finished patient (``.example``, or ``.failed``
    with the reason), so counting them works on every runner, including
    multi-process ones whose workers cannot print to this terminal.
    """

    def __init__(self, staging_dir: str, total: int, echo, interval: float = 5.0):
        self._staging, self._total, self._echo, self._interval = staging_dir, total, echo, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.time()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _count(self) -> tuple[int, int]:
        try:
            names = [m.path for m in FileSystems.match([join(self._staging, "*")])[0].metadata_list]
        except Exception:  # nothing staged yet
            return 0, 0
        return sum(n.endswith(".example") for n in names), sum(n.endswith(".failed") for n in names)

    def _loop(self):
        last = None
        while not self._stop.wait(self._interval):
            done, failed = self._count()
            if (done, failed) != last and done + failed:
                elapsed = time.time() - self._start
                left = self._total - done - failed
                eta = f", about {elapsed / (done + failed) * left:.0f} s left" if left > 0 else ""
                self._echo(f"  [{done + failed}/{self._total}] patients preprocessed ({failed} failed), "
                           f"{elapsed:.0f} s{eta}")
                last = (done, failed)


def _progress_printer(echo):
    def progress(done: int, total: int):
        if done == total or done % max(1, total // 10) == 0:
            echo(f"  checksummed {done}/{total} files")
    return progress


def format_summary(summary: Summary) -> str:
    lines = [
        f"Dataset {summary.name} version {summary.version_id}"
        + (" (already complete, reused)" if summary.already_complete else ""),
        f"  directory: {summary.dataset_dir}",
        "  patients written: " + ", ".join(f"{s} {n}" for s, n in summary.patients.items()),
        f"  patients failed: {summary.failed_patients} (details in errors.jsonl)",
    ]
    for f in summary.failures:
        lines.append(f"    {f['patient']} [{f['stage']}] {f['file']}: {f['reason']}")
    if summary.warnings:
        lines.append(f"  warnings for {len(summary.warnings)} patient(s) (see manifest.json)")
    n4 = summary.metrics.get("n4_ms")
    if n4:
        lines.append(f"  N4 seconds per patient: mean {n4['mean'] / 1000:.1f}, "
                     f"min {n4['min'] / 1000:.1f}, max {n4['max'] / 1000:.1f} over {n4['count']}")
    if summary.metrics.get("patients_resumed"):
        lines.append(f"  reused {summary.metrics['patients_resumed']} record(s) staged by an interrupted run")
    lines.append(f"  wall time: {summary.wall_seconds:.1f} s")
    return "\n".join(lines)


def configure_logging() -> None:
    """Our progress lines at INFO; Beam's and TensorFlow's chatter only from WARNING."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("beam_pipeline").setLevel(logging.INFO)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
