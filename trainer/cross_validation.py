"""k-fold cross-validation training on the folds of a dataset's manifest, as nnU-Net trains for BraTS.

A cross-validation workdir holds one ordinary training run per fold,
``fold_<k>/`` (``--config.fold=k``: fold k validates, the other folds train,
the manifest's val split stays held out).  Each fold is an independent job:
:func:`train_folds` runs them one after another here, and a cluster can run
``python -m trainer.train --config.fold=k --workdir=<cv>/fold_<k>`` for each k
instead.  Scoring the finished folds and choosing post-processing is
:mod:`evaluation.cross_validation`'s job.
"""

from __future__ import annotations

from typing import Callable

from shared import trained_run
from trainer import data, training


def count_folds(cfg) -> int:
    """How many folds the dataset of ``cfg`` has; LaunchError if it has none."""
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    if not cfg.get("data_dir"):
        raise training.LaunchError("no dataset: pass --config.data_dir=<output_dir>/<name>/<version_id>")
    try:
        info = data.open_dataset(cfg["data_dir"], verify=False)  # each fold's own launch verifies
        return data.num_folds(data.with_fold(info, 0))
    except data.DatasetError as exc:
        raise training.LaunchError(str(exc)) from None


def train_folds(cfg, workdir: str, folds=None, echo=print,
                after_training: Callable | None = None) -> list[training.Outcome]:
    """Train ``folds`` (default: all) one after another, each in ``<workdir>/fold_<k>`` (resumable, as any run).

    ``after_training``: what each fold runs on its final model (see :func:`trainer.training.train_and_evaluate`).
    """
    count = count_folds(cfg)
    folds = list(range(count)) if folds is None else [int(k) for k in folds]
    wrong = [k for k in folds if not 0 <= k < count]
    if wrong:
        raise training.LaunchError(f"fold(s) {wrong} do not exist: the dataset has {count} folds (0..{count - 1})")
    outcomes = []
    for k in folds:
        fold_cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        fold_cfg["fold"] = k
        echo(f"== fold {k} of {count} -> {trained_run.fold_dir(workdir, k)}")
        outcomes.append(training.train_and_evaluate(fold_cfg, trained_run.fold_dir(workdir, k), echo=echo,
                                                    after_training=after_training))
    return outcomes
