"""What Dataflow would receive, built offline: no credentials, no network, no GCP project.

The command a user runs (README, "Running on Dataflow") is run here as is,
with Beam's offline switches: ``--no_auth`` and ``--template_location`` (a
classic template written to a local file) with the staging location on a
GCS emulator (127.0.0.1, started for this module and stopped after).  The
test then reads back what Dataflow would get: the template, the job's steps
(the staged pipeline proto), the staged sdist (every byte-shaping module, and
it installs with ``pip install --no-deps``), the pipeline options and the
worker container.  ``--dry_run=True`` builds the job without staging and says
so; neither is reported as "no patient could be preprocessed".
"""

from __future__ import annotations

import io
import json
import pathlib
import re
import subprocess
import sys
import tarfile
import types

import pytest

from beam_pipeline import fingerprint, launch
from tests.helpers import ROOT

BUCKET = "brats-dataflow"
OFFLINE = ["--runner=DataflowRunner", "--project=test-project", "--region=europe-west4", "--no_auth",
           f"--temp_location=gs://{BUCKET}/tmp"]
STEPS = ("Patients", "Reshuffle", "Preprocess", "KeyByShard", "EmptyShards", "WithEmptyShards", "GroupByShard",
         "WriteShards", "KeyForManifest", "GroupForManifest", "WriteManifest")


def preprocess_command(cohort, output_dir, *beam_args) -> list[str]:
    """The README's command on the tiny cohort, with Beam's arguments after it."""
    return [sys.executable, "-m", "beam_pipeline.preprocess", f"--input={cohort}", f"--output_dir={output_dir}",
            "--config=configs/preprocess/synthetic_small.py", "--config.crop.size=32,32,32",
            "--config.min_brain_voxels=200", *beam_args]


def run_command(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gcs():
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("apache_beam.io.gcp.gcsio")
    from tests.gcs_emulator import gcs_emulator

    with gcs_emulator(buckets=(BUCKET,)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def template(gcs, tiny_cohort, tmp_path_factory):
    """The classic template of the job with ``--setup_file``: (process, template JSON, output dir)."""
    where = tmp_path_factory.mktemp("dataflow")
    location = where / "template.json"
    done = run_command(preprocess_command(
        tiny_cohort, where / "datasets", *OFFLINE, f"--staging_location=gs://{BUCKET}/staging",
        f"--template_location={location}", f"--setup_file={ROOT / 'setup.py'}"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done, json.loads(location.read_text()), where / "datasets"


def staged(job: dict, name: str) -> bytes:
    """A file the template points the workers at, read back from the emulator."""
    from shared import storage

    packages = {p["name"]: p["location"] for p in job["environment"]["workerPools"][0]["packages"]}
    return storage.read_bytes(packages[name].replace("storage.googleapis.com/", "gs://", 1))


def test_a_dry_run_says_so_exits_0_and_writes_nothing(gcs, tiny_cohort, tmp_path):
    done = run_command(preprocess_command(tiny_cohort, tmp_path / "datasets", *OFFLINE, "--dry_run=True"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert launch.DRY_RUN in done.stdout
    assert "no patient could be preprocessed" not in done.stdout + done.stderr
    assert not (tmp_path / "datasets").exists()


def test_the_template_is_built_and_nothing_ran(template):
    done, job, datasets = template
    assert launch.DRY_RUN in done.stdout and "no patient could be preprocessed" not in done.stdout + done.stderr
    assert job["type"] == "JOB_TYPE_BATCH"
    assert not datasets.exists()


def test_the_staged_pipeline_has_the_jobs_steps(template):
    from apache_beam.portability.api import beam_runner_api_pb2
    from shared import storage

    options = template[1]["environment"]["sdkPipelineOptions"]["options"]
    proto = beam_runner_api_pb2.Pipeline.FromString(storage.read_bytes(options["pipelineUrl"]))
    labels = {t.unique_name for t in proto.components.transforms.values()}
    assert set(STEPS) <= labels


def test_the_staged_sdist_holds_the_byte_shaping_modules_and_installs_without_deps(template, tmp_path):
    sdist = staged(template[1], "workflow.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(sdist)) as tar:
        members = {"/".join(m.name.split("/")[1:]): m for m in tar.getmembers()}
        for module in fingerprint.BYTE_SHAPING_MODULES:
            path = module.replace(".", "/") + ".py"
            assert tar.extractfile(members[path]).read() == (ROOT / path).read_bytes(), path
    (tmp_path / "workflow.tar.gz").write_bytes(sdist)
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--no-build-isolation", "--disable-pip-version-check", f"--target={target}",
                          str(tmp_path / "workflow.tar.gz")], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # A worker that installed it fingerprints the same code as the launcher: -S keeps the checkout out.
    digest = subprocess.run([sys.executable, "-S", "-c", "from beam_pipeline import fingerprint; "
                             "print(fingerprint.code_fingerprint()['sources'])"], cwd=tmp_path,
                            env={"PYTHONPATH": str(target)}, capture_output=True, text=True, timeout=60)
    assert digest.stdout.strip() == fingerprint.code_fingerprint()["sources"], digest.stderr[-2000:]


def test_the_pipeline_options_carry_the_run(template):
    options = template[1]["environment"]["sdkPipelineOptions"]["options"]
    assert options["project"] == "test-project" and options["region"] == "europe-west4"
    assert options["setup_file"].endswith("setup.py")
    assert options["temp_location"].startswith(f"gs://{BUCKET}/tmp/")
    assert options["staging_location"].startswith(f"gs://{BUCKET}/staging/")
    assert not any(k.startswith("config") or k in ("input", "output_dir") for k in options)  # absl's, not Beam's


def test_the_workers_get_the_dockerfiles_beam_and_python(template):
    """The default worker container is Beam's for this Python; the Dockerfile builds on the same one."""
    import apache_beam

    job = template[1]
    pool = job["environment"]["workerPools"][0]
    images = {c["containerImage"] for c in pool["sdkHarnessContainerImages"]} | {pool["workerHarnessContainerImage"]}
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    expected = f"beam_python{python}_sdk:{apache_beam.__version__}"
    assert images and all(i.endswith("/" + expected) for i in images), images
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    assert base == f"apache/{expected}"
    requirements = staged(job, "submission_environment_dependencies.txt").decode()
    assert f"apache-beam=={apache_beam.__version__}" in requirements


def test_build_is_installed_where_the_readmes_dataflow_steps_need_it():
    """Beam builds the --setup_file sdist with ``python -m build``: the [gcp] extra and the pins bring it."""
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'"gcp": \[.*"build[>=]', setup)
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()}
    assert "build" in pins and "pyproject_hooks" in pins
    assert re.search(r"^build==", (ROOT / "requirements.txt").read_text(), re.M)


def test_a_runner_that_returns_without_results_is_not_a_failed_cohort(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineResult, PipelineState

    assert launch.not_run_reason(PipelineOptions(["--dry_run=True"]), None) == launch.DRY_RUN
    running = launch.not_run_reason(PipelineOptions([]), PipelineResult(PipelineState.RUNNING))
    assert "RUNNING" in running and "run the same command again" in running
    assert launch.not_run_reason(PipelineOptions([]), PipelineResult(PipelineState.DONE)) == ""
    plan = types.SimpleNamespace(dataset_dir=str(tmp_path), version_id="v1")  # a run that left nothing
    error = launch._unfinished(plan, PipelineOptions(["--runner=FnApiRunner"]))
    assert isinstance(error, launch.JobNotFinished) and "no patient could be preprocessed" not in str(error)
