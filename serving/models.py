"""Loading trained Keras models for prediction: precision on this machine, and what their outputs are.

Kept apart from the run folder (:mod:`shared.trained_run`) and the
per-patient work (:mod:`serving.prediction`): this is the one serving module
that loads Keras models, and it knows nothing of patients.
"""

from __future__ import annotations

from shared import challenges


class ModelError(Exception):
    """A model that cannot be used for prediction; the message says why."""


SERVING_PRECISIONS = ("auto", "as_trained", "float32")


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def float32_copy(model):
    """The same network and weights with every layer computing in float32.

    A model trained under ``mixed_float16`` (``precision=auto`` on a GPU) keeps
    that policy per layer in its ``.keras`` file, and TensorFlow has no
    float16 CPU kernel for MaxPool3D (nor bfloat16), so on a CPU it cannot
    predict at all.  Mixed-precision variables are float32 already, so the
    weights carry over unchanged.
    """
    import keras

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float32)
    copy.set_weights(model.get_weights())
    return copy


def _computes_below_float32(model) -> bool:
    return any(layer.dtype_policy.compute_dtype != "float32" for layer in model.layers)


def load_model(model_path: str, precision: str = "auto"):
    """A ``.keras`` model ready to predict on this machine, whatever precision it was trained under.

    ``auto``: as trained on a GPU, float32 on a CPU (where half-precision
    kernels are missing or slow); ``as_trained`` keeps the saved policies;
    ``float32`` always computes in float32.
    """
    import keras

    from trainer import losses, metrics as train_metrics  # noqa: F401  (register custom objects)

    if precision not in SERVING_PRECISIONS:
        raise ModelError(f"unknown serving precision {precision!r}; choose one of {list(SERVING_PRECISIONS)}")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:
        raise ModelError(f"cannot load model {model_path}: {type(exc).__name__}: {exc}") from exc
    want_float32 = precision == "float32" or (precision == "auto" and not _has_gpu())
    if want_float32 and _computes_below_float32(model):
        model = float32_copy(model)
    return model


def load_members(paths: list[str], channels: tuple[str, ...]) -> list:
    """Every model of a prediction, each checked to take the preprocessing's channels, all of one target."""
    models = []
    for path in paths:
        model = load_model(path)
        expected = model.input_shape[-1]
        if expected != len(channels):
            raise ModelError(f"model {path} takes {expected} input channels, but its preprocessing "
                             f"gives {len(channels)} ({', '.join(channels)})")
        models.append(model)
    check_same_target(paths, models)
    return models


def check_same_target(paths: list[str], models: list) -> None:
    """Refuse an ensemble mixing class models (softmax) and region models (sigmoids): their outputs do not average."""
    from trainer import targets

    kinds = [targets.model_target(m) for m in models]
    if len(set(kinds)) > 1:
        listed = ", ".join(f"{p} ({k})" for p, k in zip(paths, kinds))
        raise ModelError(f"cannot ensemble models trained on different targets: {listed}")


def region_decoding(model, challenge: challenges.Challenge):
    """The :mod:`shared.regions` decoding of a region model (``target=regions``), None for a class model.

    The model says which it is by its output layer's name; its output count
    must match the challenge's regions, or the channels would be misread.
    """
    from shared import regions
    from trainer import targets

    if model is None or targets.model_target(model) != "regions":
        return None
    found = regions.decoding(challenge)
    if model.output_shape[-1] != len(found.names):
        raise ModelError(f"the region model has {model.output_shape[-1]} outputs, but {challenge.name} has "
                         f"{len(found.names)} regions ({', '.join(found.names)})")
    return found
