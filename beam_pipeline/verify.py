"""Check a dataset version directory against its manifest; exit 1 on any mismatch.

    python -m beam_pipeline.verify --data_dir=/data/datasets/brats2020/<version_id>
"""

import sys

from absl import app, flags

from shared import cli, storage
from shared.manifest import read_manifest, verify

_DIR = flags.DEFINE_string("data_dir", None, "A dataset version directory (holds manifest.json).")
cli.deprecated_alias("dataset_dir", "data_dir")
flags.mark_flag_as_required("data_dir")


def main(argv):
    del argv
    if not storage.exists(_DIR.value):  # a misspelling, not a damaged dataset
        cli.fail(f"--data_dir: {storage.folder_problem(_DIR.value)}")
    problems = verify(_DIR.value)
    if problems:
        for problem in problems:
            print(f"MISMATCH {problem}", file=sys.stderr)
        print(f"{_DIR.value}: {len(problems)} problem(s); do not train on this directory.", file=sys.stderr)
        sys.exit(1)
    manifest = read_manifest(_DIR.value)
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    print(f"{_DIR.value}: OK, version {manifest['version_id']}, {shards} shard(s) match the manifest.")


if __name__ == "__main__":
    cli.run(main)
