"""Training and validation of the 3D U-Net on a dataset version.

``train_and_evaluate(cfg, workdir)`` is the whole job, callable from tests
and notebooks; ``trainer/train.py`` only parses flags.  Everything that can
be wrong with the request (data, config, devices) is checked before the
first step, so a bad launch fails in seconds, not after an epoch.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable

import keras
import tensorflow as tf

from shared import challenges, manifest as manifest_lib, trained_run
from shared.trained_run import Lineage
from trainer import augment as augment_lib, data, losses, model as model_lib, resume, runtime, targets


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
    already_finished: bool = False  # a re-launch of a finished run: nothing was trained
    inference_choice: dict | None = None  # inference.json: the best window and TTA on the validation split


def _check_lineage(workdir: str, info: data.DatasetInfo, cfg: dict) -> Lineage:
    """Record which data this run trains on; refuse to resume onto other data.

    The lineage keeps copies of the manifest's preprocessing config and scan
    geometry, so prediction can repeat the preprocessing (and check scans
    against the training geometry) where the dataset is not reachable.
    """
    data_dir = info.data_dir if "://" in info.data_dir else os.path.abspath(info.data_dir)
    found = manifest_lib.read_manifest(info.data_dir)
    folded = info.fold is not None
    lineage = Lineage(
        data_dir=data_dir, version_id=info.version_id, manifest_sha256=info.manifest_sha256,
        channels=tuple(info.channels), num_train=info.num_train, num_val=info.num_val,
        challenge=info.challenge, label_convention=challenges.get(info.challenge).label_convention,
        num_classes=info.num_classes, target=cfg.get("target", "classes"),
        preprocess=found["config"], geometry=found.get("geometry"),
        fold=info.fold, num_folds=data.num_folds(info) if folded else None,
        val_patients=tuple(info.val_patients) if folded else None)
    old = trained_run.read_lineage(workdir)
    if old is not None:
        if (old.version_id, old.manifest_sha256) != (info.version_id, info.manifest_sha256):
            raise LaunchError(f"{workdir} was trained on dataset version {old.version_id}, not "
                              f"{info.version_id}: use a new --workdir")
        if old.fold != info.fold:
            raise LaunchError(f"{workdir} trained fold {old.fold}, not fold {info.fold}: use a new --workdir")
    return lineage


def prepare(cfg, workdir: str):
    """Validate the whole request; returns (dataset info, model spec)."""
    if not cfg["data_dir"]:
        raise LaunchError("no dataset: pass --config.data_dir=<output_dir>/<name>/<version_id>")
    try:
        info = data.open_dataset(cfg["data_dir"], verify=cfg["verify_data"])
        fold = cfg.get("fold", -1)
        if fold is not None and fold != -1:  # cross-validation: fold k validates, the other folds train
            info = data.with_fold(info, int(fold))
        # one output per class of the dataset's challenge (4 for GLI 2023, 5 for GLI 2024...), or per region
        spec = targets.model_spec(model_lib.spec_from_config(cfg["model"]), cfg.get("target", "classes"),
                                  challenges.get(info.challenge))
        targets.check_deep_supervision(spec, cfg.get("deep_supervision", False))
        model_lib.check_patch_size(cfg["patch_size"], spec.depth)
        data.check_patch_fits(cfg["patch_size"], info.volume_shape)
        model_lib.check_patch_size(info.volume_shape, spec.depth)  # validation runs on whole volumes
        data.check_whole_volumes(info, spec.depth)  # records of a shape each (bbox)
        losses.get_loss(cfg["loss"])
        validation_epochs(cfg["val_every"], cfg["epochs"])
        runtime.check_devices(cfg["require_gpu"])
        runtime.cluster_spec()  # a malformed TF_CONFIG fails here, not after the dataset is opened
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
            line += (f", val loss {logs['val_loss']:.4f}, val Dice {dice} mean {logs.get('val_dice_mean', 0):.3f}"
                     f", per-patient mean {logs.get('val_patient_dice_mean', 0):.3f}")
        self._echo(line + f" ({time.time() - self._start:.1f} s)")


class EpochScalars(keras.callbacks.Callback):
    """The epoch's logs as TensorBoard scalars (``train/`` and ``validation/``, as Keras names them).

    Instead of ``keras.callbacks.TensorBoard``: with it, ``fit`` sat idle for
    30-48 s after its last epoch on 2 CPU cores (the callback's teardown; the
    same scalars written here cost nothing), a sixth of the demo's training.
    Steps are epoch numbers, so a resumed run continues the same curves.
    """

    def __init__(self, logdir: str):
        super().__init__()
        self._logdir, self._writers = logdir, {}

    def on_train_begin(self, logs=None):
        self._writers = {part: tf.summary.create_file_writer(os.path.join(self._logdir, part))
                         for part in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            part = "validation" if name.startswith("val_") else "train"
            with self._writers[part].as_default():
                tf.summary.scalar("epoch_" + name.removeprefix("val_"), value, step=epoch + 1)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()


def _scratch(workdir: str, chief: bool) -> str:
    """Where this task writes: the workdir for the chief, a folder of its own for other workers."""
    return workdir if chief else trained_run.worker_dir(workdir, runtime.task_index())


def _callbacks(cfg, scratch: str, state: resume.RunState, echo, extra=()):
    """The run's callbacks; the backup comes last, so it records the others' end-of-epoch state."""
    checkpoint = stopping = None
    cbs = []
    if cfg["num_val_patients"]:
        checkpoint = resume.BestCheckpoint(
            trained_run.join(scratch, trained_run.CHECKPOINTS_DIR, trained_run.BEST_CHECKPOINT), state.best)
        cbs.append(checkpoint)
        if cfg["early_stopping_patience"]:
            stopping = resume.ResumableEarlyStopping(cfg["early_stopping_patience"], state)
            cbs.append(stopping)
    cbs += [
        keras.callbacks.CSVLogger(trained_run.join(scratch, trained_run.HISTORY_FILE), append=True),
        EpochScalars(trained_run.join(scratch, trained_run.TENSORBOARD_DIR)),
        EpochSummary(cfg["epochs"], challenges.get(cfg["challenge"]).regions, echo),
        *extra,
    ]
    return cbs + [resume.ResumableBackup(trained_run.join(scratch, trained_run.BACKUP_DIR), state, checkpoint,
                                         stopping)]


def _resume_point(cfg, workdir: str, scratch: str, echo) -> resume.RunState | None:
    """The state to train on from; None when the run has finished and is not to continue.

    A workdir with a final model but no backup (trained before backups were
    kept, or the backup deleted) counts as finished: it cannot be continued.
    """
    state = resume.read_state(trained_run.join(scratch, trained_run.BACKUP_DIR))
    finished = state.finished if state else tf.io.gfile.exists(trained_run.model_file(workdir))
    if not finished:
        return (state or resume.RunState()).on_monitor()
    done = state.epoch if state else "all its"
    if not cfg["continue_training"]:
        echo(f"{workdir} has finished training ({done} epoch(s)); its model is {trained_run.model_file(workdir)}. "
             "Nothing to do. To train on, pass --config.continue_training=true (and a larger --config.epochs).")
        return None
    if state is None:
        raise LaunchError(f"{workdir} holds a final model but no {trained_run.BACKUP_DIR}/ to continue from: "
                          "use a new --workdir")
    if cfg["epochs"] <= state.epoch:
        raise LaunchError(f"{workdir} has already trained {state.epoch} epoch(s): to continue, raise "
                          f"--config.epochs above {state.epoch}")
    echo(f"Continuing the finished run in {workdir} from epoch {state.epoch + 1}")
    return state.continued().on_monitor()


def _train_input(cfg, info: data.DatasetInfo, aug: augment_lib.AugmentConfig, first_epoch: int, strategy):
    """The training stream, from ``first_epoch`` on; under TF_CONFIG each worker reads only its share.

    One epoch of a pipeline is what its replicas consume in ``steps_per_epoch``
    steps, so data epochs and training epochs line up (and a resumed run gets
    the same samples as an uninterrupted one).
    """
    def build(batch_size: int, samples: int, shard: data.Shard):
        return data.train_dataset(info, batch_size, aug, seed=cfg["seed"], shuffle_buffer=cfg["data"]["shuffle_buffer"],
                                  cache=cfg["data"]["cache"], deterministic=cfg["deterministic"],
                                  samples_per_epoch=samples, first_epoch=first_epoch, shard=shard)

    if not runtime.cluster_spec():
        return build(cfg["batch_size"], cfg["steps_per_epoch"] * cfg["batch_size"], data.Shard())

    def per_worker(context: tf.distribute.InputContext):
        per_replica = context.get_per_replica_batch_size(cfg["batch_size"])
        local_replicas = strategy.num_replicas_in_sync // context.num_input_pipelines
        return build(per_replica, cfg["steps_per_epoch"] * per_replica * local_replicas,
                     data.Shard(context.num_input_pipelines, context.input_pipeline_id))

    return strategy.distribute_datasets_from_function(per_worker)


def validation_epochs(val_every: int, epochs: int) -> list[int]:
    """The epochs (1-based) that validate: every ``val_every``-th, and always the last.

    The last always does, so a run that validates rarely (whole-volume
    validation can cost more than the epoch's steps on full-size records)
    still ends with the validation its summary, best checkpoint and
    ``history.csv`` report.
    """
    if val_every < 1:
        raise ValueError(f"val_every must be >= 1, got {val_every}")
    return sorted({e for e in range(val_every, epochs + 1, val_every)} | {epochs})


def _channel_names(info: data.DatasetInfo) -> str:
    """'t2f,t1n,t1c,t2w' for a GLI 2024 dataset: the names its user knows from the file names."""
    return ",".join(challenges.get(info.challenge).modality_names(info.channels))


def _validation_steps(info: data.DatasetInfo) -> int | None:
    """One step per validation patient (batches of one), so Keras stops at the end of the split.

    The split is filtered by patient, so tf.data cannot know its length; without a count Keras reads
    until the data ends and then warns "Your input ran out of data" though every patient was scored.
    Under TF_CONFIG each worker reads a share of unknown size: there Keras reads to the end.
    """
    return (info.num_val or None) if not runtime.cluster_spec() else None


def _save_final(net, workdir: str, chief: bool) -> str:
    """Save the model as .keras and as a SavedModel; every worker must take part.

    Under MultiWorkerMirroredStrategy, reading variables for saving runs
    collective ops, so a chief saving alone waits forever for the others.
    Non-chief workers save into their scratch folder and delete it afterwards.
    """
    target = workdir if chief else trained_run.join(trained_run.worker_dir(workdir, runtime.task_index()), "final")
    tf.io.gfile.makedirs(target)
    net.save(trained_run.model_file(target))
    net.export(trained_run.join(target, trained_run.SAVED_MODEL_DIR), verbose=False)
    if not chief:
        tf.io.gfile.rmtree(target)
    return trained_run.model_file(workdir)


def _verbosity(chief: bool) -> int:
    """A progress bar in a terminal, one line per epoch in logs, nothing on other workers."""
    if not chief:
        return 0
    return 1 if sys.stdout.isatty() else 2


def train_and_evaluate(cfg, workdir: str, echo=print, extra_callbacks=(),
                       after_training: Callable[[dict, str, Callable], dict | None] | None = None) -> Outcome:
    """Train on the dataset ``cfg['data_dir']`` names; resumable in ``workdir``.

    ``after_training(cfg, model_path, echo)`` runs on the chief once the final
    model is saved and before the run is marked finished (so a run killed there
    does it again when re-launched); what it returns is the outcome's
    ``inference_choice``.  The entry point wires the end-of-training
    window/TTA choice here (:func:`evaluation.inference_choice.after_training`):
    the training library does not know about evaluation.

    A re-launch resumes after the last finished epoch with the best
    checkpoint, early stopping and the data stream where they were; a
    re-launch of a finished run does nothing unless ``continue_training``.
    """
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    info, spec = prepare(cfg, workdir)
    chief = runtime.is_chief()
    scratch = _scratch(workdir, chief)
    tf.io.gfile.makedirs(scratch)  # the workdir, or a worker's own folder: its history.csv opens in on_train_begin
    lineage = _check_lineage(workdir, info, cfg)
    state = _resume_point(cfg, workdir, scratch, echo if chief else (lambda *_: None))
    if state is None:
        return _finished_outcome(workdir)
    if chief:
        trained_run.write_lineage(workdir, lineage)
        trained_run.write_config(workdir, cfg)
    keras.utils.set_random_seed(cfg["seed"])
    if cfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    policy = runtime.set_precision(cfg["precision"])
    strategy = runtime.strategy()
    if cfg["batch_size"] % strategy.num_replicas_in_sync:
        raise LaunchError(f"batch_size {cfg['batch_size']} is not divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas")
    echo(f"Training {cfg['model']['preset']} U-Net on {info.version_id}"
         + (f" fold {info.fold}/{data.num_folds(info)}" if info.fold is not None else "")
         + f" ({info.num_train} train / {info.num_val} val patients, channels {_channel_names(info)}), precision {policy}, "
         f"{strategy.num_replicas_in_sync} replica(s)" + (f", resuming at epoch {state.epoch + 1}" if state.epoch else ""))

    train_ds = _train_input(cfg, info, augment_lib.AugmentConfig.from_config(cfg), state.epoch, strategy)
    val_ds = data.val_dataset(info) if info.num_val else None
    if runtime.cluster_spec() and val_ds is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        val_ds = val_ds.with_options(options)

    with strategy.scope():
        net = targets.compiled_model((None, None, None, len(info.channels)), spec, cfg.get("target", "classes"),
                                     challenges.get(info.challenge), cfg["loss"],
                                     _optimizer(cfg, cfg["epochs"] * cfg["steps_per_epoch"]),
                                     deep_supervision=cfg.get("deep_supervision", False),
                                     jit_compile=cfg["jit_compile"],
                                     region_weights=tuple(cfg.get("region_weights") or ()))
    cfg["num_val_patients"] = info.num_val
    cfg["challenge"] = info.challenge
    resume.trim_history(trained_run.join(scratch, trained_run.HISTORY_FILE), state.epoch)
    history = net.fit(train_ds, epochs=cfg["epochs"], steps_per_epoch=cfg["steps_per_epoch"],
                      shuffle=False,  # the stream shuffles itself (data.epoch_records); True only makes Keras warn
                      validation_data=val_ds, validation_steps=_validation_steps(info),
                      validation_freq=validation_epochs(cfg["val_every"], cfg["epochs"]), verbose=_verbosity(chief),
                      callbacks=_callbacks(cfg, scratch, state, echo if chief else (lambda *_: None),
                                           extra_callbacks))
    model_path = _save_final(net, workdir, chief)
    choice = after_training(cfg, model_path, echo) if after_training and chief and info.num_val else None
    resume.mark_finished(trained_run.join(scratch, trained_run.BACKUP_DIR))
    last = {k: float(v[-1]) for k, v in history.history.items() if k.startswith("val_")}
    return Outcome(workdir=workdir, policy=policy, epochs_run=len(history.history.get("loss", [])),
                   val_metrics=last, history_csv=trained_run.join(workdir, trained_run.HISTORY_FILE),
                   model_path=model_path,
                   inference_choice=choice)


def _finished_outcome(workdir: str) -> Outcome:
    state = resume.read_state(trained_run.join(workdir, trained_run.BACKUP_DIR))
    return Outcome(workdir=workdir, policy=trained_run.recorded_precision(workdir), epochs_run=0,
                   val_metrics=dict(state.last_val) if state else {},
                   history_csv=trained_run.join(workdir, trained_run.HISTORY_FILE),
                   model_path=trained_run.model_file(workdir), already_finished=True)
