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


def cluster_spec() -> dict | None:
    """The TF_CONFIG of a multi-worker launch, or None on a single machine."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    spec = json.loads(raw)
    return spec if len(spec.get("cluster", {}).get("worker", [])) > 1 else None


def strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored under TF_CONFIG, Mirrored across several GPUs, else the default."""
    if cluster_spec():
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(gpus()) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Worker 0 (or a single machine) writes the shared outputs."""
    spec = cluster_spec()
    if not spec:
        return True
    task = spec.get("task", {})
    return task.get("type") in ("chief", None) or (task.get("type") == "worker" and task.get("index") == 0
                                                     and "chief" not in spec["cluster"])


def task_index() -> int:
    spec = cluster_spec()
    return int(spec["task"].get("index", 0)) if spec else 0
