r"""Compare two models scored on the same patients: per-patient differences with a bootstrap 95% CI.

    python -m evaluation.compare runs/a/eval_val/scores.csv runs/b/eval_val/scores.csv
    python -m evaluation.compare a/scores.csv b/scores.csv --columns=lesion_dice_ET,hd95_WT --output_dir=diff/

Differences are B - A (the second file minus the first).  Both files should come
from ``python -m evaluation.evaluate`` under the same scheme (summary.json beside
each says which); a warning is printed when the schemes differ.  With --output_dir
the results are also written to <output_dir>/comparison.json.
"""

import json
import posixpath
import sys

from absl import app, flags

from evaluation import comparison
from shared import cli
from shared.storage import exists, join, read_bytes, write_bytes

OUTPUT_FILE = "comparison.json"  # what --output_dir receives

_COLUMNS = flags.DEFINE_list("columns", None, "Columns to compare (default: every Dice, HD95 and lesion F1 "
                             "column both files have).")
_ROUNDS = flags.DEFINE_integer("rounds", 10000, "Bootstrap resamples.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap random seed (fixed: the same files give the same interval).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, f"Also write the results as JSON to <output_dir>/{OUTPUT_FILE}.")
_OUTPUT = cli.DEFINE_deprecated_string("output", "output_dir", "Also write the results as JSON to this file.")


def _scheme_of(scores_path: str) -> str | None:
    summary = posixpath.join(posixpath.dirname(scores_path), "summary.json")
    if not exists(summary):
        return None
    return json.loads(read_bytes(summary)).get("scheme")


def _output_path() -> str | None:
    """Where the JSON goes: <--output_dir>/comparison.json, or the deprecated --output's file."""
    if _OUTPUT.value and _OUTPUT_DIR.value:
        cli.fail("pass --output_dir only (--output is its deprecated predecessor)")
    return join(_OUTPUT_DIR.value, OUTPUT_FILE) if _OUTPUT_DIR.value else _OUTPUT.value


def main(argv):
    if len(argv) != 3:
        raise app.UsageError("usage: python -m evaluation.compare A/scores.csv B/scores.csv [--columns=...]")
    path_a, path_b = argv[1], argv[2]
    output = _output_path()
    for path in (path_a, path_b):
        if not exists(path):
            cli.fail(f"{path} does not exist (pass the scores.csv files evaluation.evaluate wrote)")
    a = comparison.read_scores(read_bytes(path_a).decode())
    b = comparison.read_scores(read_bytes(path_b).decode())
    scheme_a, scheme_b = _scheme_of(path_a), _scheme_of(path_b)
    if scheme_a != scheme_b:
        print(f"warning: the files were scored under different schemes ({scheme_a} vs {scheme_b})", file=sys.stderr)
    columns = _COLUMNS.value or comparison.default_columns(a, b)
    if not columns:
        cli.fail("the two files share no Dice or HD95 column (pass --columns)")
    results = [comparison.paired(a, b, c, _ROUNDS.value, _SEED.value) for c in columns]
    print(comparison.format_comparison(results, path_a, path_b))
    if output:
        payload = {"a": path_a, "b": path_b, "scheme": scheme_a, "rounds": _ROUNDS.value, "seed": _SEED.value,
                   "results": results}
        write_bytes(output, (json.dumps(payload, indent=2) + "\n").encode())
    if not any(r["n"] for r in results):
        cli.fail("no patient is scored in both files", status=1)


if __name__ == "__main__":
    cli.run(main)
