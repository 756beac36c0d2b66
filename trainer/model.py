"""Configurable 3D U-Net (Keras 3 functional API).

The ``"seed"`` preset reproduces the seed project's BraTS 2020 U-Net
(Zineb DKIER) layer for layer: five levels of 16/32/64/128/256 filters, two
3x3x3 ReLU convs per level with dropout between them (0.1, 0.1, 0.2, 0.2, 0.3
in the encoder, mirrored 0.2, 0.2, 0.1, 0.1 in the decoder), he_normal on the
3x3x3 convs, 2x2x2 max pooling, 2x2x2 stride-2 transposed convs and a 1x1x1
softmax head over four classes: 5,645,828 parameters at (144, 144, 144, 3).

The seed's write-up normalises inputs with ``Lambda(lambda x: x / 255)``
(commented out in its final code).  Our images are z-scored per modality by
the pipeline, so no scaling layer is built; it has no weights, so the
parameter count is unchanged.

The other presets keep the same topology but swap the block internals
(normalisation, activation, dropout, width) through :class:`UNetSpec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import keras
from keras import layers


NORMALIZATIONS = ("none", "batch", "instance", "group")
ACTIVATIONS = ("relu", "leaky_relu", "elu")
UPSAMPLINGS = ("transpose", "upsample_conv")
HEADS = ("softmax", "sigmoid")
# The output layer's name says what a saved model predicts, so serving needs no side file to
# tell a region model (independent sigmoids, shared/regions.py) from a class model (softmax).
OUTPUT_NAMES = {"softmax": "probabilities", "sigmoid": "region_probabilities"}
LEAKY_SLOPE = 0.01  # nnU-Net's negative slope
MAX_GROUPS = 8


@dataclasses.dataclass(frozen=True)
class UNetSpec:
    """Everything that shapes the network, so a config can describe a model.

    ``dropout`` holds one rate per level; a decoder level reuses the rate of
    the encoder level it is concatenated with (as the seed model does).  An
    empty tuple means no dropout anywhere.
    """

    depth: int = 5
    base_filters: int = 16
    max_filters: int = 320
    dropout: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.3)
    upsampling: str = "transpose"
    normalization: str = "none"
    activation: str = "relu"
    kernel_initializer: str = "he_normal"
    full_resolution_convs: int = 2  # conv units in each full-resolution block (encoder and decoder): 1 or 2
    num_classes: int = 4  # outputs: background + 3 tumour labels, or one per region; training sets them
    head: str = "softmax"  # softmax over classes | sigmoid per region (target=regions)

    def __post_init__(self):
        # Fail at config time, not halfway through building a graph.
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.base_filters < 1 or self.max_filters < self.base_filters:
            raise ValueError(
                f"need 1 <= base_filters <= max_filters, got {self.base_filters}, {self.max_filters}"
            )
        if self.dropout and len(self.dropout) != self.depth:
            raise ValueError(
                f"dropout needs one rate per level ({self.depth}) or none, got {len(self.dropout)}"
            )
        if any(not 0.0 <= r < 1.0 for r in self.dropout):
            raise ValueError(f"dropout rates must be in [0, 1), got {self.dropout}")
        if self.full_resolution_convs not in (1, 2):
            raise ValueError(f"full_resolution_convs must be 1 or 2, got {self.full_resolution_convs}")
        _check_choice("upsampling", self.upsampling, UPSAMPLINGS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("head", self.head, HEADS)
        if self.num_classes < (2 if self.head == "softmax" else 1):
            raise ValueError(f"num_classes must be >= 2 for a softmax head (>= 1 for sigmoid), got {self.num_classes}")

    def filters(self, level: int) -> int:
        """Width of a level: doubled per level, capped (nnU-Net caps at 320)."""
        return min(self.base_filters * 2**level, self.max_filters)

    def dropout_rate(self, level: int) -> float:
        return self.dropout[level] if self.dropout else 0.0


def _check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {field} {value!r}; choose one of {list(choices)}")


_PRESETS: dict[str, UNetSpec] = {
    # The seed project's model, exactly (the UNetSpec defaults are the seed).
    "seed": UNetSpec(),
    # nnU-Net-like default: instance norm + leaky ReLU, wider, no dropout.
    "nnunet": UNetSpec(
        depth=5,
        base_filters=32,
        max_filters=320,
        dropout=(),
        upsampling="transpose",
        normalization="instance",
        activation="leaky_relu",
    ),
    # Small enough for CPU demos and tests.
    "tiny": UNetSpec(
        depth=3,
        base_filters=8,
        max_filters=320,
        dropout=(),
        normalization="instance",
        activation="leaky_relu",
    ),
}
PRESETS = tuple(_PRESETS)


def preset(name: str) -> UNetSpec:
    """A named spec: "seed" (the seed model), "nnunet", "tiny"."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}") from None


def spec_from_config(cfg) -> UNetSpec:
    """Spec from a dict-like config: ``preset`` (default "seed") + field overrides.

    Unknown keys raise, because a misspelt override (``normalisation``) would
    otherwise silently train a different model than the one configured.
    """
    items = dict(cfg.items()) if not isinstance(cfg, Mapping) else dict(cfg)
    base = preset(items.pop("preset", None) or "seed")
    fields = {f.name for f in dataclasses.fields(UNetSpec)}
    unknown = sorted(set(items) - fields)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; known: ['preset'] + {sorted(fields)}")
    # a field a config leaves None (an ml_collections placeholder, so a flag can set it) keeps the preset's;
    # dropout None has always meant none
    items = {k: v for k, v in items.items() if v is not None or k == "dropout"}
    if "dropout" in items:
        items["dropout"] = tuple(float(r) for r in (items["dropout"] or ()))
    return dataclasses.replace(base, **items)


def check_patch_size(patch_size: Sequence[int | None], depth: int) -> None:
    """Raise if a spatial dim cannot be halved ``depth - 1`` times exactly.

    Pooling would floor odd sizes and the decoder's upsampled maps would no
    longer match their skips, failing deep inside the graph; this says why.
    """
    factor = 2 ** (depth - 1)
    bad = [d for d in patch_size if d is not None and d % factor]
    if bad:
        raise ValueError(
            f"patch size {tuple(patch_size)} does not suit a U-Net of depth {depth}: "
            f"every spatial dim must be divisible by 2**(depth-1) = {factor}, not {bad}"
        )


def _group_count(filters: int) -> int:
    """Largest group count <= 8 that divides ``filters`` (GroupNorm needs it)."""
    return next(g for g in range(min(MAX_GROUPS, filters), 0, -1) if filters % g == 0)


def _normalization(spec: UNetSpec, filters: int, name: str):
    if spec.normalization == "batch":
        return layers.BatchNormalization(name=name)
    if spec.normalization == "instance":
        return layers.GroupNormalization(groups=-1, name=name)
    if spec.normalization == "group":
        return layers.GroupNormalization(groups=_group_count(filters), name=name)
    return None


def _activation(spec: UNetSpec, name: str):
    if spec.activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name)
    return layers.Activation(spec.activation, name=name)


def _conv_unit(x, spec: UNetSpec, filters: int, name: str):
    """3x3x3 conv -> [norm] -> activation.

    The conv bias is dropped when a normalisation follows, since the norm's
    own offset makes it redundant.
    """
    norm = _normalization(spec, filters, f"{name}_norm")
    x = layers.Conv3D(
        filters,
        3,
        padding="same",
        use_bias=norm is None,
        kernel_initializer=spec.kernel_initializer,
        name=f"{name}_conv",
    )(x)
    if norm is not None:
        x = norm(x)
    return _activation(spec, f"{name}_act")(x)


def _conv_block(x, spec: UNetSpec, level: int, name: str):
    """Two conv units with the level's dropout between them (the seed layout).

    With ``full_resolution_convs=1`` the full-resolution blocks keep only
    their first unit.  That level holds most of a step's voxels (8x the
    next level's), so on a CPU, where a small U-Net's step costs by voxels
    rather than by filters, one unit there cuts a step's CPU by about a
    third, at the cost of 2 voxels of receptive field per block
    (BUILD_NOTES, "Issue 23, fifth session").
    """
    filters = spec.filters(level)
    x = _conv_unit(x, spec, filters, f"{name}_a")
    if level == 0 and spec.full_resolution_convs == 1:
        return x
    rate = spec.dropout_rate(level)
    if rate > 0:
        x = layers.Dropout(rate, name=f"{name}_dropout")(x)
    return _conv_unit(x, spec, filters, f"{name}_b")


def _upsample(x, spec: UNetSpec, filters: int, name: str):
    """Double the resolution with a learned, linear 2x2x2 conv.

    Like the seed, the up-convolution has no activation and keeps Keras'
    default initializer.
    """
    if spec.upsampling == "transpose":
        return layers.Conv3DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_tconv")(x)
    x = layers.UpSampling3D(2, name=f"{name}_upsample")(x)
    return layers.Conv3D(filters, 2, padding="same", name=f"{name}_upconv")(x)


def supervised_levels(depth: int) -> tuple[int, ...]:
    """Decoder levels that get an auxiliary head under deep supervision (level k: 1/2**k resolution).

    nnU-Net supervises every decoder output but gives the coarsest a weight
    of 0; we do not build that one.  A shallow net (depth 3) keeps level 1;
    depth 2 has no level to supervise.
    """
    return tuple(range(1, min(max(depth - 2, 2), depth - 1)))


def _head(x, spec: UNetSpec, name: str):
    """1x1x1 conv + softmax/sigmoid, float32 even under a mixed policy (accurate losses)."""
    logits = layers.Conv3D(spec.num_classes, 1, name=f"{name}logits")(x)
    return layers.Activation(spec.head, dtype="float32", name=f"{name}{OUTPUT_NAMES[spec.head]}")(logits)


def build_unet(
    input_shape: tuple[int | None, int | None, int | None, int],
    spec: UNetSpec,
    name: str = "unet3d",
    deep_supervision: bool = False,
) -> keras.Model:
    """Build the U-Net for channels-last ``(D, H, W, C)`` inputs.

    Spatial dims may be ``None`` (fully convolutional inference on any size
    divisible by ``2**(depth-1)``).  The head is float32 even under a
    ``mixed_float16`` policy so probabilities and losses stay accurate.
    ``deep_supervision``: the model also returns auxiliary outputs at the
    :func:`supervised_levels` (finest first, after the full-resolution one);
    for training only (:class:`DeepSupervision`).
    """
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (D, H, W, C), got {tuple(input_shape)}")
    check_patch_size(input_shape[:3], spec.depth)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for level in range(spec.depth - 1):
        x = _conv_block(x, spec, level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"enc{level}_pool")(x)
    x = _conv_block(x, spec, spec.depth - 1, "bottleneck")

    aux = {}
    wanted = supervised_levels(spec.depth) if deep_supervision else ()
    for level in reversed(range(spec.depth - 1)):
        x = _upsample(x, spec, spec.filters(level), f"dec{level}")
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = _conv_block(x, spec, level, f"dec{level}")
        if level in wanted:
            aux[level] = _head(x, spec, f"aux{level}_")

    outputs = _head(x, spec, "")
    if aux:
        return keras.Model(inputs, [outputs, *(aux[k] for k in sorted(aux))], name=name)
    return keras.Model(inputs, outputs, name=name)


def supervision_weights(outputs: int) -> tuple[float, ...]:
    """nnU-Net's deep-supervision weights: 1, 1/2, 1/4, ... (full resolution first), summing to 1."""
    raw = [0.5**i for i in range(outputs)]
    return tuple(w / sum(raw) for w in raw)


def serving_model(net: keras.Model) -> keras.Model:
    """The one-output model to save and serve: ``net`` itself, or a deep-supervised net's main output."""
    if isinstance(net, DeepSupervision):
        return net.serving_model()
    return net


@keras.saving.register_keras_serializable(package="trainer")
class DeepSupervision(keras.Model):
    """Training wrapper of a multi-output U-Net: the loss over every output, the metrics on the main one.

    Each auxiliary output at 1/2**k resolution is compared with the target
    downsampled by nearest neighbour (every 2**k-th voxel, as nnU-Net does),
    weighted by :func:`supervision_weights`.  ``save``/``export`` write the
    one-output serving model, so checkpoints and the final model never carry
    the auxiliary heads.  ``loss`` is any ``(y_true, y_pred)`` function; the
    one passed to ``compile`` is not used (pass none).
    """

    def __init__(self, network: keras.Model, loss, **kwargs):
        super().__init__(name=f"{network.name}_deep_supervision", **kwargs)
        if len(network.outputs) < 2:
            raise ValueError(f"{network.name} has one output: build it with deep_supervision=True")
        self.network = network
        self.supervised_loss = loss
        self.strides = (1, *(2**k for k in supervised_levels_of(network)))
        self.loss_weights_ = supervision_weights(len(network.outputs))
        self.built = True

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = 0.0
        for weight, stride, output in zip(self.loss_weights_, self.strides, y_pred):
            target = y if stride == 1 else y[:, ::stride, ::stride, ::stride, :]
            total = total + weight * self.supervised_loss(target, output)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[0], sample_weight)

    def serving_model(self) -> keras.Model:
        return keras.Model(self.network.inputs, self.network.outputs[0], name=self.network.name)

    def save(self, filepath, *args, **kwargs):
        return self.serving_model().save(filepath, *args, **kwargs)

    def export(self, filepath, *args, **kwargs):
        return self.serving_model().export(filepath, *args, **kwargs)


def supervised_levels_of(network: keras.Model) -> tuple[int, ...]:
    """The levels of a deep-supervised network's auxiliary outputs, from their layer names."""
    names = [t._keras_history[0].name for t in network.outputs[1:]]
    return tuple(int(n[len("aux"):n.index("_")]) for n in names)
