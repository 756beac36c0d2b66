"""Training and validation of the 3D U-Net on a dataset version.

``train_and_evaluate(cfg, workdir)`` is the whole job, callable from tests
and notebooks; ``trainer/train.py`` only parses flags.  Everything that can
be wrong with the request (data, config, devices) is checked before the
first step, so a bad launch fails in seconds, not after an epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import keras
import tensorflow as tf

from shared import challenges, manifest as manifest_lib
from trainer import data, losses, metrics, model as model_lib, runtime

LINEAGE = "lineage.json"


class LaunchError(Exception):
    """A request that cannot be trained; the message names the problem."""


@dataclasses.dataclass
class Outcome:
    workdir: str
    policy: str
    epochs_run: int
    val_metrics: dict[str, float]  # last epoch's validation metrics
    history_csv: str
    model_path: str


def _check_lineage(workdir: str, info: data.DatasetInfo) -> dict:
    """Record which data this run trains on; refuse to resume onto other data."""
    data_dir = info.data_dir if "://" in info.data_dir else os.path.abspath(info.data_dir)
    lineage = {"data_dir": data_dir, "version_id": info.version_id, "manifest_sha256": info.manifest_sha256,
               "channels": list(info.channels), "num_train": info.num_train, "num_val": info.num_val,
               # the label numbering predictions are written in, and the app's legend
               "challenge": info.challenge, "label_convention": challenges.get(info.challenge).label_convention,
               "num_classes": info.num_classes,
               # a copy, so prediction can repeat the preprocessing where the dataset is not reachable
               "preprocess": manifest_lib.read_manifest(info.data_dir)["config"]}
    path = os.path.join(workdir, LINEAGE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            old = json.load(f)
        if (old["version_id"], old["manifest_sha256"]) != (info.version_id, info.manifest_sha256):
            raise LaunchError(f"{workdir} was trained on dataset version {old['version_id']}, not "
                              f"{info.version_id}: use a new --workdir")
    return lineage


def _write_json(path: str, value) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def prepare(cfg, workdir: str):
    """Validate the whole request; returns (dataset info, model spec)."""
    if not cfg["data_dir"]:
        raise LaunchError("no dataset: pass --config.data_dir=<output_dir>/<name>/<version_id>")
    try:
        info = data.open_dataset(cfg["data_dir"], verify=cfg["verify_data"])
        # as many outputs as the dataset's challenge has classes (4 for GLI 2023, 5 for GLI 2024...)
        spec = dataclasses.replace(model_lib.spec_from_config(cfg["model"]), num_classes=info.num_classes)
        model_lib.check_patch_size(cfg["patch_size"], spec.depth)
        data.check_patch_fits(cfg["patch_size"], info.volume_shape)
        model_lib.check_patch_size(info.volume_shape, spec.depth)  # validation runs on whole volumes
        losses.get_loss(cfg["loss"])
        runtime.check_devices(cfg["require_gpu"])
    except (data.DatasetError, ValueError, runtime.RuntimeConfigError) as exc:
        raise LaunchError(str(exc)) from None
    return info, spec


def _optimizer(cfg, total_steps: int):
    o = cfg["optimizer"]
    lr = o["learning_rate"]
    if o["schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1))
    elif o["schedule"] == "polynomial":
        lr = keras.optimizers.schedules.PolynomialDecay(lr, decay_steps=max(total_steps, 1), power=0.9)
    elif o["schedule"] != "constant":
        raise LaunchError(f"unknown schedule {o['schedule']!r}; choose constant, cosine or polynomial")
    if o["name"] == "adam":
        return keras.optimizers.Adam(lr)
    if o["name"] == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=o["weight_decay"])
    if o["name"] == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.99, nesterov=True)
    raise LaunchError(f"unknown optimizer {o['name']!r}; choose adam, adamw or sgd")


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch with the BraTS region Dice, whatever the verbosity."""

    def __init__(self, epochs: int, regions, echo=print):
        super().__init__()
        self._epochs, self._regions, self._echo, self._start = epochs, tuple(regions), echo, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        line = f"epoch {epoch + 1}/{self._epochs}: loss {logs.get('loss', float('nan')):.4f}"
        if "val_loss" in logs:
            dice = " ".join(f"{r} {logs.get(f'val_dice_{r.lower()}', float('nan')):.3f}" for r in self._regions)
            line += f", val loss {logs['val_loss']:.4f}, val Dice {dice} mean {logs.get('val_dice_mean', 0):.3f}"
        self._echo(line + f" ({time.time() - self._start:.1f} s)")


def _callbacks(cfg, workdir: str, chief: bool, echo, extra=()):
    scratch = workdir if chief else os.path.join(workdir, f"worker_{runtime.task_index()}")
    cbs = [
        keras.callbacks.BackupAndRestore(os.path.join(scratch, "backup")),
        keras.callbacks.CSVLogger(os.path.join(scratch, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(scratch, "tensorboard")),
        EpochSummary(cfg["epochs"], challenges.get(cfg["challenge"]).regions, echo),
    ]
    if cfg["num_val_patients"]:
        cbs.append(keras.callbacks.ModelCheckpoint(
            os.path.join(scratch, "checkpoints", "best.keras"), monitor="val_dice_mean", mode="max",
            save_best_only=True))
        if cfg["early_stopping_patience"]:
            cbs.append(keras.callbacks.EarlyStopping(monitor="val_dice_mean", mode="max",
                                                     patience=cfg["early_stopping_patience"]))
    return cbs + list(extra)


def _save_final(net, workdir: str, chief: bool) -> str:
    """Save the model as .keras and as a SavedModel; every worker must take part.

    Under MultiWorkerMirroredStrategy, reading variables for saving runs
    collective ops, so a chief saving alone waits forever for the others.
    Non-chief workers save into their scratch folder and delete it afterwards.
    """
    target = workdir if chief else os.path.join(workdir, f"worker_{runtime.task_index()}", "final")
    tf.io.gfile.makedirs(target)
    model_path = os.path.join(target, "model.keras")
    net.save(model_path)
    net.export(os.path.join(target, "saved_model"), verbose=False)
    if not chief:
        tf.io.gfile.rmtree(target)
    return os.path.join(workdir, "model.keras")


def _verbosity(chief: bool) -> int:
    """A progress bar in a terminal, one line per epoch in logs, nothing on other workers."""
    if not chief:
        return 0
    return 1 if sys.stdout.isatty() else 2


def train_and_evaluate(cfg, workdir: str, echo=print, extra_callbacks=()) -> Outcome:
    """Train on the dataset ``cfg['data_dir']`` names; resumable in ``workdir``."""
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    info, spec = prepare(cfg, workdir)
    chief = runtime.is_chief()
    tf.io.gfile.makedirs(workdir)
    lineage = _check_lineage(workdir, info)
    if chief:
        _write_json(os.path.join(workdir, LINEAGE), lineage)
        _write_json(os.path.join(workdir, "config.json"), cfg)
    keras.utils.set_random_seed(cfg["seed"])
    if cfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    policy = runtime.set_precision(cfg["precision"])
    strategy = runtime.strategy()
    echo(f"Training {cfg['model']['preset']} U-Net on {info.version_id} ({info.num_train} train / "
         f"{info.num_val} val patients, channels {','.join(info.channels)}), precision {policy}, "
         f"{strategy.num_replicas_in_sync} replica(s)")

    aug = data.AugmentConfig.from_config(cfg)
    train_ds = data.train_dataset(info, cfg["batch_size"], aug, seed=cfg["seed"],
                                  shuffle_buffer=cfg["data"]["shuffle_buffer"], cache=cfg["data"]["cache"],
                                  deterministic=cfg["deterministic"])
    val_ds = data.val_dataset(info) if info.num_val else None
    if runtime.cluster_spec():
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_ds = train_ds.with_options(options)
        val_ds = val_ds.with_options(options) if val_ds is not None else None

    with strategy.scope():
        net = model_lib.build_unet((None, None, None, len(info.channels)), spec)
        net.compile(optimizer=_optimizer(cfg, cfg["epochs"] * cfg["steps_per_epoch"]),
                    loss=losses.get_loss(cfg["loss"]), metrics=metrics.training_metrics(challenges.get(info.challenge)),
                    jit_compile=cfg["jit_compile"])
    cfg["num_val_patients"] = info.num_val
    cfg["challenge"] = info.challenge
    history = net.fit(train_ds, epochs=cfg["epochs"], steps_per_epoch=cfg["steps_per_epoch"],
                      validation_data=val_ds, validation_freq=cfg["val_every"], verbose=_verbosity(chief),
                      callbacks=_callbacks(cfg, workdir, chief, echo if chief else (lambda *_: None),
                                           extra_callbacks))
    model_path = _save_final(net, workdir, chief)
    last = {k: float(v[-1]) for k, v in history.history.items() if k.startswith("val_")}
    return Outcome(workdir=workdir, policy=policy, epochs_run=len(history.history.get("loss", [])),
                   val_metrics=last, history_csv=os.path.join(workdir, "history.csv"), model_path=model_path)
