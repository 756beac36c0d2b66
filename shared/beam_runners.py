"""Beam runners under the short names users type, for every Beam job of the project.

Beam resolves ``--runner=DataflowRunner`` and the other runners it ships by
name, but the DaskRunner only by its full class path; preprocessing and batch
prediction both accept ``--runner=DaskRunner``.  No Beam import: only the
arguments are rewritten.
"""

from __future__ import annotations

RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def runner_aliases(beam_args: list[str]) -> list[str]:
    """``--runner=DaskRunner`` as Beam needs it (``--runner=apache_beam.runners.dask...DaskRunner``)."""
    out = []
    for arg in beam_args:
        name = arg.split("=", 1)[1] if arg.startswith("--runner=") else None
        out.append(f"--runner={RUNNER_ALIASES[name]}" if name in RUNNER_ALIASES else arg)
    return out
