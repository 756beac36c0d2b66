"""What a run must remember across restarts, kept beside its backup weights.

Keras' ``BackupAndRestore`` restores weights, optimizer and epoch, but every
other callback starts afresh: ``ModelCheckpoint`` from -inf (so the first
validation after a restart overwrote ``best.keras`` even when worse),
``EarlyStopping`` with no patience used, ``CSVLogger`` appending the
re-run epochs again, and nothing recorded that a run had finished, so a
re-launch trained it again.  :class:`ResumableBackup` writes that state in
the same JSON file, at the same moment, as Keras' own epoch counter, so the
weights and the state always describe the same epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os

import keras
import tensorflow as tf

# The best checkpoint and early stopping follow the mean over validation patients of each
# patient's mean region Dice (trainer/metrics.py), as BraTS ranks; not the Dice of pooled voxels.
MONITOR = "val_patient_dice_mean"
LEGACY_MONITOR = "val_dice_mean"
METADATA = "training_metadata.json"  # BackupAndRestore's own file name


@dataclasses.dataclass(frozen=True)
class RunState:
    """A run as of the end of epoch ``epoch`` (the number of epochs done)."""

    epoch: int = 0
    best: float | None = None  # best MONITOR so far (what best.keras holds)
    best_epoch: int | None = None
    stopping_wait: int = 0  # EarlyStopping: epochs since the last improvement
    stopping_best: float | None = None
    stopping_best_epoch: int = 0
    last_val: dict = dataclasses.field(default_factory=dict)  # last validation's metrics
    finished: bool = False
    monitor: str = MONITOR  # what ``best`` and ``stopping_best`` measure (older backups: the pooled Dice)

    def to_json(self) -> dict:
        return dict(dataclasses.asdict(self), batch=0)  # batch: BackupAndRestore reads it too

    @classmethod
    def from_json(cls, value: dict) -> "RunState":
        fields = {f.name for f in dataclasses.fields(cls)}
        # a backup written before the monitor was recorded measured the pooled Dice
        return cls(**{"monitor": LEGACY_MONITOR, **{k: v for k, v in value.items() if k in fields}})

    def on_monitor(self) -> "RunState":
        """This state with bests that compare with :data:`MONITOR`: another metric's bests are forgotten.

        A run backed up while it monitored the pooled Dice would otherwise
        keep its best.keras until the per-patient mean beat a pooled value.
        """
        if self.monitor == MONITOR:
            return self
        return dataclasses.replace(self, monitor=MONITOR, best=None, best_epoch=None, stopping_best=None,
                                   stopping_best_epoch=0, stopping_wait=0)

    def continued(self) -> "RunState":
        """The state to train on from after a finished run: patience starts again, the best stays."""
        return dataclasses.replace(self, finished=False, stopping_wait=0)


def read_state(backup_dir: str) -> RunState | None:
    """The state the backup holds, or None when there is no backup."""
    path = os.path.join(backup_dir, METADATA)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return RunState.from_json(json.load(f))


def _write_json_atomically(path: str, value: dict) -> None:
    """A kill mid-write must not leave a half file that makes the run unresumable."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def mark_finished(backup_dir: str) -> None:
    """Record that the run reached its end (after the final model is saved)."""
    state = read_state(backup_dir) or RunState()
    _write_json_atomically(os.path.join(backup_dir, METADATA), dataclasses.replace(state, finished=True).to_json())


def _number(value) -> float | None:
    return None if value is None else float(value)


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """``best.keras``: the model of the best validation mean Dice, continuing from a recorded best.

    An epoch without validation (``val_every`` > 1) is skipped; Keras would
    otherwise save it unconditionally.
    """

    def __init__(self, path: str, best: float | None):
        super().__init__(path, monitor=MONITOR, mode="max", save_best_only=True, initial_value_threshold=best)
        self.best_epoch = None

    def _should_save_model(self, epoch, batch, logs, filepath):
        if (logs or {}).get(self.monitor) is None:
            return False
        better = super()._should_save_model(epoch, batch, logs, filepath)
        if better:
            self.best_epoch = epoch
        return better


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience count survives a restart (Keras resets it in ``on_train_begin``)."""

    def __init__(self, patience: int, state: RunState):
        super().__init__(monitor=MONITOR, mode="max", patience=patience)
        self._restored = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait = self._restored.stopping_wait
        self.best = self._restored.stopping_best
        self.best_epoch = self._restored.stopping_best_epoch


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also saves the checkpoint's, early stopping's and validation's state.

    Kept after training (``delete_checkpoint=False``): its state says the run
    finished, and its weights and optimizer let ``continue_training`` go on.
    Must come after the callbacks it reads from, so it sees their
    end-of-epoch state.
    """

    def __init__(self, backup_dir: str, state: RunState, checkpoint: BestCheckpoint | None = None,
                 stopping: ResumableEarlyStopping | None = None):
        super().__init__(backup_dir, delete_checkpoint=False)
        self._state, self._checkpoint, self._stopping = state, checkpoint, stopping

    def on_epoch_end(self, epoch, logs=None):
        val = {k: float(v) for k, v in (logs or {}).items() if k.startswith("val_")}
        if val:
            self._state = dataclasses.replace(self._state, last_val=val)
        super().on_epoch_end(epoch, logs)

    def _current_state(self) -> RunState:
        state = dataclasses.replace(self._state, epoch=self._current_epoch, finished=False)
        if self._checkpoint is not None:
            state = dataclasses.replace(state, best=_number(self._checkpoint.best),
                                        best_epoch=self._checkpoint.best_epoch
                                        if self._checkpoint.best_epoch is not None else state.best_epoch)
        if self._stopping is not None:
            state = dataclasses.replace(state, stopping_wait=int(self._stopping.wait),
                                        stopping_best=_number(self._stopping.best),
                                        stopping_best_epoch=int(self._stopping.best_epoch))
        return state

    def _save_model(self):
        """Weights, then the state in the one file Keras reads the epoch from (replaced whole)."""
        tf.io.gfile.makedirs(self.backup_dir)
        self.model.save_weights(filepath=self._weights_path, overwrite=True)
        self._state = self._current_state()
        _write_json_atomically(self._training_metadata_path, self._state.to_json())


def trim_history(path: str, epochs_done: int) -> None:
    """Keep the rows of epochs ``0 .. epochs_done - 1``: a resumed run re-runs the rest, and appends them.

    Without a backup (``epochs_done`` 0) the file goes, header included, so
    the CSV logger writes a fresh one.
    """
    if not tf.io.gfile.exists(path):
        return
    if epochs_done == 0:
        tf.io.gfile.remove(path)
        return
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    epoch_col = rows[0].index("epoch")
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[epoch_col]) < epochs_done]
    if len(kept) == len(rows):
        return
    out = io.StringIO()
    csv.writer(out, dialect=csv.excel).writerows(kept)  # as Keras' CSVLogger writes it
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(out.getvalue())
