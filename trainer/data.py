"""tf.data input pipelines over a verified dataset version.

Training: shard files shuffled with a seed -> parallel interleave of GZIP
TFRecordDatasets -> [cache] -> shuffle -> repeat -> parse (shared schema) ->
augment -> batch -> prefetch.  Validation: whole cropped volumes, no
augmentation, in manifest order.

The records are parsed by ``shared.schema.parse_tf`` only; nothing here knows
the byte layout.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from shared import manifest as manifest_lib
from shared import schema


class DatasetError(Exception):
    """The dataset directory cannot be trained on (missing, unverifiable, unsuitable)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    data_dir: str
    version_id: str
    manifest_sha256: str
    channels: tuple[str, ...]
    num_classes: int
    volume_shape: tuple[int, int, int]  # cropped grid of every record
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    num_train: int
    num_val: int


def open_dataset(data_dir: str, verify: bool = True) -> DatasetInfo:
    """Read and (by default) verify the manifest; refuse anything unusable."""
    try:
        manifest = manifest_lib.read_manifest(data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(str(exc)) from None
    if verify:
        problems = manifest_lib.verify(data_dir, manifest)
        if problems:
            listed = "\n  ".join(str(p) for p in problems[:10])
            raise DatasetError(f"{data_dir} does not match its manifest ({len(problems)} problem(s)):\n  {listed}\n"
                               "Re-run beam_pipeline.preprocess, or check python -m beam_pipeline.verify.")
    splits = manifest["splits"]
    if not splits["train"]["patients"]:
        raise DatasetError(f"{data_dir} has no training patients")
    crop = manifest["config"]["crop"]
    shape = crop["size"] if crop["mode"] == "centered" else [b - a for a, b in crop["box"]]
    return DatasetInfo(
        data_dir=data_dir,
        version_id=manifest["version_id"],
        manifest_sha256=manifest_lib.manifest_sha256(data_dir),
        channels=tuple(manifest["record"]["channels"]),
        num_classes=len(manifest["record"]["classes"]),
        volume_shape=tuple(int(s) for s in shape),
        train_files=tuple(manifest_lib.shard_paths(data_dir, manifest, "train")),
        val_files=tuple(manifest_lib.shard_paths(data_dir, manifest, "val")),
        num_train=len(splits["train"]["patients"]),
        num_val=len(splits["val"]["patients"]),
    )


# ----------------------------------------------------------------------------- augmentation


def _patch_start(mask, patch, foreground_share, seed):
    """Start corner of a patch; with probability ``foreground_share`` centred on tumour."""
    shape = tf.shape(mask)[:3]
    patch = tf.constant(patch, tf.int32)
    tumour = tf.where(mask[..., 0] == 0)  # background class is channel 0
    coin = tf.random.stateless_uniform([], seed=seed)
    n = tf.shape(tumour)[0]

    def on_tumour():
        pick = tf.random.stateless_uniform([], seed=seed + 1, maxval=n, dtype=tf.int32)
        return tf.cast(tumour[pick], tf.int32) - patch // 2

    def anywhere():
        high = tf.maximum(shape - patch + 1, 1)
        return tf.cast(tf.random.stateless_uniform([3], seed=seed + 2) * tf.cast(high, tf.float32), tf.int32)

    start = tf.cond(tf.logical_and(coin < foreground_share, n > 0), on_tumour, anywhere)
    return tf.clip_by_value(start, 0, tf.maximum(shape - patch, 0))


def random_patch(image, mask, patch, foreground_share, seed):
    """Same random box cut from image and mask (patch must fit the volume)."""
    start = _patch_start(mask, patch, foreground_share, seed)
    size_i = tf.concat([tf.constant(patch, tf.int32), [tf.shape(image)[3]]], 0)
    size_m = tf.concat([tf.constant(patch, tf.int32), [tf.shape(mask)[3]]], 0)
    begin = tf.concat([start, [0]], 0)
    return tf.slice(image, begin, size_i), tf.slice(mask, begin, size_m)


def random_flips(image, mask, seed):
    """Mirror each spatial axis with probability 1/2, image and mask together."""
    coins = tf.random.stateless_uniform([3], seed=seed)
    for axis in range(3):
        flip = coins[axis] < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [axis]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [axis]), lambda: mask)
    return image, mask


def random_axial_rotation(image, mask, seed):
    """Rotate by a multiple of 90 degrees in the axial (first two axes) plane."""
    k = tf.random.stateless_uniform([], seed=seed, maxval=4, dtype=tf.int32)

    def rot(volume):
        # rot90 acts on axes (1, 2) of a 4-D batch: treat the first axis as the batch
        moved = tf.transpose(volume, [2, 0, 1, 3])
        return tf.transpose(tf.image.rot90(moved, k), [1, 2, 0, 3])

    return rot(image), rot(mask)


def random_intensity(image, scale_range, shift_range, seed):
    """Per-channel scale and shift inside the brain; background stays 0."""
    channels = tf.shape(image)[-1]
    scale = tf.random.stateless_uniform([channels], seed=seed, minval=1 - scale_range, maxval=1 + scale_range)
    shift = tf.random.stateless_uniform([channels], seed=seed + 1, minval=-shift_range, maxval=shift_range)
    brain = tf.cast(tf.reduce_any(tf.not_equal(image, 0), axis=-1, keepdims=True), image.dtype)
    return (image * scale + shift) * brain


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    patch_size: tuple[int, int, int]
    foreground_share: float = 0.33
    flips: bool = True
    rotation: bool = False
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1

    @classmethod
    def from_config(cls, cfg) -> "AugmentConfig":
        a = cfg["augment"]
        return cls(patch_size=tuple(int(p) for p in cfg["patch_size"]), foreground_share=float(a["foreground_share"]),
                   flips=bool(a["flips"]), rotation=bool(a["rotation"]),
                   intensity_scale=float(a["intensity_scale"]), intensity_shift=float(a["intensity_shift"]))


def augment(example, seed, aug: AugmentConfig):
    """One training sample: patch, flips, rotation, intensity; returns (image, mask)."""
    image, mask = random_patch(example["image"], example["mask"], aug.patch_size, aug.foreground_share, seed)
    if aug.flips:
        image, mask = random_flips(image, mask, seed + 3)
    if aug.rotation:
        image, mask = random_axial_rotation(image, mask, seed + 4)
    if aug.intensity_scale or aug.intensity_shift:
        image = random_intensity(image, aug.intensity_scale, aug.intensity_shift, seed + 5)
    return image, tf.cast(mask, tf.float32)


# ----------------------------------------------------------------------------- pipelines


def _records(files, seed, deterministic, cycle_length=4):
    files_ds = tf.data.Dataset.from_tensor_slices(list(files))
    files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return files_ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(cycle_length, len(files)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)


def train_dataset(info: DatasetInfo, batch_size: int, aug: AugmentConfig, seed: int = 0,
                  shuffle_buffer: int = 16, cache: bool = False, deterministic: bool = False) -> tf.data.Dataset:
    """Endless stream of augmented (image patch, one-hot mask patch) batches."""
    check_patch_fits(aug.patch_size, info.volume_shape)
    ds = _records(info.train_files, seed, deterministic)
    if cache:
        ds = ds.cache()  # serialised records (float16): about half the decoded size
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(schema.parse_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    # a per-element stateless seed: reproducible augmentation under parallel maps
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda ex, s: augment(ex, tf.cast(s % (2**31 - 1), tf.int32), aug),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def val_dataset(info: DatasetInfo, batch_size: int = 1) -> tf.data.Dataset:
    """Whole cropped validation volumes, no augmentation, fixed order."""
    files = info.val_files or info.train_files
    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP")
    ds = ds.map(lambda r: _image_mask(schema.parse_tf(r)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _image_mask(example):
    return example["image"], tf.cast(example["mask"], tf.float32)


def check_patch_fits(patch, volume_shape) -> None:
    if any(p > v for p, v in zip(patch, volume_shape)):
        raise DatasetError(f"patch size {tuple(patch)} is larger than the dataset's volumes {tuple(volume_shape)}")
