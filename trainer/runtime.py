"""Precision policy, device checks and distribution strategy, decided in one place."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


class RuntimeConfigError(Exception):
    """The machine cannot run the configuration as asked (e.g. no GPU)."""


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def set_precision(precision: str) -> str:
    """Set Keras' global dtype policy; ``auto`` is mixed_float16 on GPU, float32 on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    policy = ("mixed_float16" if gpus() else "float32") if precision == "auto" else precision
    keras.mixed_precision.set_global_policy(policy)
    return policy


def check_devices(require_gpu: bool) -> None:
    if require_gpu and not gpus():
        raise RuntimeConfigError("require_gpu is set but TensorFlow sees no GPU "
                                 "(check the CUDA install with: python -c 'import tensorflow as tf; "
                                 "print(tf.config.list_physical_devices())')")


TRAINING_TASKS = ("chief", "worker")  # the task types that train; TF_CONFIG may also name others


def cluster_spec() -> dict | None:
    """The TF_CONFIG of a multi-worker launch, or None on a single machine.

    A cluster is two or more training tasks, counting a ``chief`` as well as
    the ``worker`` s: a chief and one worker is a two-machine run.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RuntimeConfigError(f"TF_CONFIG is not JSON: {exc}") from None
    cluster = spec.get("cluster", {})
    if sum(len(cluster.get(kind, [])) for kind in TRAINING_TASKS) < 2:
        return None
    _task(spec)  # refuse a task this cluster does not have, before any strategy is built
    return spec


def _task(spec: dict) -> tuple[str, int]:
    task = spec.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    members = spec["cluster"].get(kind, []) if kind in TRAINING_TASKS else []
    if not 0 <= index < len(members):
        sizes = ", ".join(f"{len(spec['cluster'].get(k, []))} {k}" for k in TRAINING_TASKS)
        raise RuntimeConfigError(f"TF_CONFIG task {kind!r} index {index} is not one of the cluster's training "
                                 f"tasks ({sizes})")
    return kind, index

def strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored under TF_CONFIG, Mirrored across several GPUs, else the default."""
    if cluster_spec():
        allow_multi_worker_fit()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(gpus()) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """The task that writes the shared outputs: the ``chief``, or worker 0 when there is none.

    Exactly one task of a cluster answers True.
    """
    spec = cluster_spec()
    if not spec:
        return True
    kind, index = _task(spec)
    return kind == "chief" or (index == 0 and not spec["cluster"].get("chief"))


def task_index() -> int:
    """This task's index among tasks of its type (names a non-chief's scratch folder)."""
    spec = cluster_spec()
    return _task(spec)[1] if spec else 0


def input_pipeline() -> tuple[int, int]:
    """(number of input pipelines, this task's): one per training task, the chief first.

    The numbering TensorFlow's ``InputContext`` uses under
    MultiWorkerMirroredStrategy, so shares computed here match its.
    """
    spec = cluster_spec()
    if not spec:
        return 1, 0
    kind, index = _task(spec)
    chiefs = len(spec["cluster"].get("chief", []))
    return chiefs + len(spec["cluster"].get("worker", [])), index if kind == "chief" else chiefs + index


def allow_multi_worker_fit() -> None:
    """Work around Keras 3 failing ``fit`` under MultiWorkerMirroredStrategy.

    Before the first step Keras builds its metrics from one batch, which it
    obtains by reducing the per-replica batch across workers; that eager
    reduce cannot convert a PerReplica value and raises (keras-team/keras
    issue 20585, open since Keras 3.0).  The build only needs shapes, so this
    takes the local replica's batch instead.  Each step's logs are then
    reduced with ``axis=0``, which fails for scalars; they are reduced as
    whole values.  Applied only under TF_CONFIG.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer.TensorFlowTrainer, "_multi_worker_patch", False):
        return
    original = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def build_from_local_batch(self, iterator=None, data_batch=None):
        if iterator is None or self._distribute_strategy is None:
            return original(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda x: self._distribute_strategy.experimental_local_results(x)[0]
                if isinstance(x, tf.distribute.DistributedValues) else x, batch)
            break
        with self._distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_scalars_without_axis(values, strategy, reduction):
        # Keras reduces every log with axis=0, which fails for scalar metric values.
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    tf_trainer.reduce_per_replica = reduce_scalars_without_axis
    tf_trainer.TensorFlowTrainer._multi_worker_patch = True
