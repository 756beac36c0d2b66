"""tf.data input pipelines over a verified dataset version.

Training, one epoch after another, each seeded from (seed, epoch): this
pipeline's share of the shard files, shuffled -> parallel interleave of
TFRecordDatasets (GZIP or uncompressed, as the manifest's record.compression
says) [or the share cached in memory] -> shuffle -> the epoch's samples ->
parse (shared schema) + augment -> batch -> prefetch.  Validation: whole cropped volumes, no
augmentation, in manifest order.

The records are parsed by ``shared.schema.parse_tf`` only; nothing here knows
the byte layout.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from shared import manifest as manifest_lib
from shared import schema
from shared.spec import PreprocessingSpec


class DatasetError(Exception):
    """The dataset directory cannot be trained on (missing, unverifiable, unsuitable)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    data_dir: str
    version_id: str
    manifest_sha256: str
    channels: tuple[str, ...]
    num_classes: int
    challenge: str  # registry name (shared/challenges.py): labels, regions, numbering
    volume_shape: tuple[int, int, int]  # cropped grid of every record
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    num_train: int
    num_val: int
    compression: str = manifest_lib.DEFAULT_COMPRESSION  # of the shards: "GZIP" or "NONE" (manifest record.compression)
    folds: dict = dataclasses.field(default_factory=dict, compare=False)  # manifest "folds": training patient -> fold
    fold: int | None = None  # the cross-validation fold this view trains for (None: the manifest's splits)
    # Patient filters of a fold view (empty: every record of the files): the
    # folds share the training shards, so a fold is a filter on patient id.
    train_patients: tuple[str, ...] = ()
    val_patients: tuple[str, ...] = ()


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
    try:
        compression = manifest_lib.record_compression(manifest)
    except ValueError as exc:
        raise DatasetError(f"{data_dir}: {exc}") from None
    try:
        preprocessing = PreprocessingSpec.from_config(manifest["config"])
        shape = preprocessing.crop_shape
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{data_dir}: the manifest's preprocessing config is unusable: {exc}") from None
    return DatasetInfo(
        data_dir=data_dir,
        version_id=manifest["version_id"],
        manifest_sha256=manifest_lib.manifest_sha256(data_dir),
        channels=tuple(manifest["record"]["channels"]),
        num_classes=len(manifest["record"]["classes"]),
        challenge=preprocessing.challenge.name,
        volume_shape=tuple(int(s) for s in shape),
        train_files=tuple(manifest_lib.shard_paths(data_dir, manifest, "train")),
        val_files=tuple(manifest_lib.shard_paths(data_dir, manifest, "val")),
        num_train=len(splits["train"]["patients"]),
        num_val=len(splits["val"]["patients"]),
        compression=compression,
        folds={str(p): int(k) for p, k in (manifest.get("folds") or {}).items()},
    )


def num_folds(info: DatasetInfo) -> int:
    """How many cross-validation folds the manifest assigns (0: none)."""
    return max(info.folds.values()) + 1 if info.folds else 0


def fold_patients(folds: dict, fold: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training, validation) patients of ``fold``: it validates, every other fold trains."""
    train = tuple(sorted(p for p, k in folds.items() if k != fold))
    val = tuple(sorted(p for p, k in folds.items() if k == fold))
    return train, val


def with_fold(info: DatasetInfo, fold: int) -> DatasetInfo:
    """The dataset as cross-validation fold ``fold`` sees it.

    Fold ``fold`` of the manifest's training patients validates and the other
    folds train; the manifest's own val split stays held out (never read), so
    it can still score the ensemble of the folds on patients none of them saw.
    Both come from the training shards, filtered by patient id.
    """
    count = num_folds(info)
    if not count:
        raise DatasetError(f"{info.data_dir} has no cross-validation folds (its manifest has no 'folds'): "
                           "preprocess it with --config.split.num_folds=5 (or another k > 1)")
    if not 0 <= fold < count:
        raise DatasetError(f"fold {fold} does not exist: {info.data_dir} has {count} folds (0..{count - 1})")
    train, val = fold_patients(info.folds, fold)
    if not train or not val:
        raise DatasetError(f"fold {fold} of {info.data_dir} leaves {len(train)} training and {len(val)} "
                           "validation patients: each needs at least one")
    return dataclasses.replace(info, fold=fold, val_files=info.train_files, train_patients=train, val_patients=val,
                               num_train=len(train), num_val=len(val))


def _only_patients(ds: tf.data.Dataset, patients: tuple[str, ...]) -> tf.data.Dataset:
    """The serialised records of ``patients`` only (parses just the id of each record)."""
    if not patients:
        return ds
    wanted = tf.constant(list(patients))
    feature = {"patient_id": tf.io.FixedLenFeature([], tf.string)}

    def keep(serialized):
        pid = tf.io.parse_single_example(serialized, feature)["patient_id"]
        return tf.reduce_any(tf.equal(wanted, pid))

    return ds.filter(keep)


# ----------------------------------------------------------------------------- augmentation
#
# Cost matters here: on a CPU host the input pipeline shares the cores with
# training.  Every step works on the patch, never on the whole volume: the
# image stays float16 until it is cropped, the one-hot mask (4 x uint8 per
# voxel) is cropped and flipped as one uint32 per voxel, and crop, flips,
# float32 cast and intensity run as one fused XLA kernel (``xla=True``), which
# is about 6x cheaper than the same ops one by one (channels-last broadcasts
# over 3 channels are slow in TensorFlow's CPU kernels).  Tumour voxels are
# listed only for the patches that are to be centred on one.


def _patch_start(mask, patch, foreground_share, seed):
    """Start corner of a patch; with probability ``foreground_share`` centred on a tumour voxel."""
    shape = tf.shape(mask)[:3]
    patch = tf.constant(patch, tf.int32)
    coin = tf.random.stateless_uniform([], seed=seed)

    def anywhere():
        high = tf.maximum(shape - patch + 1, 1)
        return tf.cast(tf.random.stateless_uniform([3], seed=seed + 2) * tf.cast(high, tf.float32), tf.int32)

    def on_tumour():
        tumour = tf.where(mask[..., 0] == 0)  # background class is channel 0
        n = tf.shape(tumour)[0]

        def pick():
            i = tf.random.stateless_uniform([], seed=seed + 1, maxval=n, dtype=tf.int32)
            return tf.cast(tumour[i], tf.int32) - patch // 2

        return tf.cond(n > 0, pick, anywhere)

    start = tf.cond(coin < foreground_share, on_tumour, anywhere)
    return tf.clip_by_value(start, 0, tf.maximum(shape - patch, 0))


def _flip_axes(flip):
    """Indices of the spatial axes to mirror, from a boolean [3] vector."""
    return tf.boolean_mask(tf.range(3), flip)


def _crop_flip(volume, start, patch, flip=None):
    """``volume[start:start+patch]`` on the three spatial axes, then mirrored where ``flip`` says.

    A uint8 volume with 4 channels (the one-hot mask) moves as one uint32 per
    voxel: a quarter of the elements to copy and reverse.
    """
    packed = volume.dtype == tf.uint8 and volume.shape.rank == 4 and volume.shape[-1] == 4
    if packed:
        volume = tf.bitcast(volume, tf.uint32)  # (D, H, W)
        volume = tf.slice(volume, start, patch)
    else:
        volume = tf.slice(volume, tf.concat([start, [0]], 0), tf.concat([tf.constant(patch, tf.int32), [-1]], 0))
    if flip is not None:
        volume = tf.reverse(volume, _flip_axes(flip))
    return tf.bitcast(volume, tf.uint8) if packed else volume


def random_patch(image, mask, patch, foreground_share, seed):
    """Same random box cut from image and mask (patch must fit the volume)."""
    start = _patch_start(mask, patch, foreground_share, seed)
    return _crop_flip(image, start, patch), _crop_flip(mask, start, patch)


def _flip_coins(seed):
    return tf.random.stateless_uniform([3], seed=seed) < 0.5


def random_flips(image, mask, seed):
    """Mirror each spatial axis with probability 1/2, image and mask together."""
    axes = _flip_axes(_flip_coins(seed))
    return tf.reverse(image, axes), tf.reverse(mask, axes)


def random_axial_rotation(image, mask, seed):
    """Rotate by a multiple of 90 degrees in the axial (first two axes) plane."""
    k = tf.random.stateless_uniform([], seed=seed, maxval=4, dtype=tf.int32)

    def rot(volume):
        # rot90 acts on axes (1, 2) of a 4-D batch: treat the first axis as the batch
        moved = tf.transpose(volume, [2, 0, 1, 3])
        return tf.transpose(tf.image.rot90(moved, k), [1, 2, 0, 3])

    return rot(image), rot(mask)


def _intensity_draws(channels, scale_range, shift_range, seed):
    scale = tf.random.stateless_uniform([channels], seed=seed, minval=1 - scale_range, maxval=1 + scale_range)
    shift = tf.random.stateless_uniform([channels], seed=seed + 1, minval=-shift_range, maxval=shift_range)
    return scale, shift


def _scale_shift_in_brain(image, scale, shift):
    brain = tf.reduce_any(tf.not_equal(image, 0), axis=-1, keepdims=True)
    return tf.where(brain, image * scale + shift, tf.zeros_like(image))


def random_intensity(image, scale_range, shift_range, seed):
    """Per-channel scale and shift inside the brain; background stays 0."""
    scale, shift = _intensity_draws(tf.shape(image)[-1], scale_range, shift_range, seed)
    return _scale_shift_in_brain(image, tf.cast(scale, image.dtype), tf.cast(shift, image.dtype))


def _image_patch_ops(image, start, patch, flip, scale, shift):
    """float16/32 volume -> float32 patch: crop, flips, cast, intensity (scale 1, shift 0: none)."""
    channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
    image = tf.slice(image, tf.concat([start, [0]], 0), tf.stack([*patch, channels]))
    for axis in range(3):  # a select, not a data-dependent axis list: XLA needs static axes
        image = tf.where(flip[axis], tf.reverse(image, [axis]), image)
    return _scale_shift_in_brain(tf.cast(image, tf.float32), scale, shift)


_XLA_KERNELS: dict = {}


def _image_patch(image, start, patch, flip, scale, shift, xla: bool):
    if not xla:
        image = _crop_flip(image, start, patch, flip)
        return _scale_shift_in_brain(tf.cast(image, tf.float32), scale, shift)
    kernel = _XLA_KERNELS.get(tuple(patch))
    if kernel is None:
        kernel = _XLA_KERNELS[tuple(patch)] = tf.function(
            lambda i, s, f, a, b: _image_patch_ops(i, s, tuple(patch), f, a, b), jit_compile=True, autograph=False)
    return kernel(image, start, flip, scale, shift)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    patch_size: tuple[int, int, int]
    foreground_share: float = 0.33
    flips: bool = True
    rotation: bool = False
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    xla: bool = True  # fuse crop/flips/cast/intensity of the image into one XLA kernel (same result, faster)

    @classmethod
    def from_config(cls, cfg) -> "AugmentConfig":
        a = cfg["augment"]
        return cls(patch_size=tuple(int(p) for p in cfg["patch_size"]), foreground_share=float(a["foreground_share"]),
                   flips=bool(a["flips"]), rotation=bool(a["rotation"]),
                   intensity_scale=float(a["intensity_scale"]), intensity_shift=float(a["intensity_shift"]),
                   xla=bool(a.get("xla", True)))


def augment(example, seed, aug: AugmentConfig, mask_dtype=tf.float32):
    """One training sample: patch, flips, rotation, intensity; returns (float32 image, mask).

    ``example["image"]`` may be float16 (as stored) or float32; the random
    draws use ``seed`` (patch), ``seed + 3`` (flips), ``seed + 4`` (rotation)
    and ``seed + 5``/``+ 6`` (intensity scale/shift).  Intensity is applied
    before the rotation: it is a per-voxel map, so the order does not change
    the result.
    """
    image, mask = example["image"], example["mask"]
    patch = tuple(int(p) for p in aug.patch_size)
    start = _patch_start(mask, patch, aug.foreground_share, seed)
    flip = _flip_coins(seed + 3) if aug.flips else tf.zeros([3], tf.bool)
    channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
    if aug.intensity_scale or aug.intensity_shift:
        scale, shift = _intensity_draws(channels, aug.intensity_scale, aug.intensity_shift, seed + 5)
    else:
        scale, shift = tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32)
    image = _image_patch(image, start, patch, flip, scale, shift, aug.xla)
    mask = _crop_flip(mask, start, patch, flip if aug.flips else None)
    if aug.rotation:
        image, mask = random_axial_rotation(image, mask, seed + 4)
    return image, tf.cast(mask, mask_dtype)


# ----------------------------------------------------------------------------- pipelines


@dataclasses.dataclass(frozen=True)
class Shard:
    """Which share of the training records one input pipeline reads: ``index`` of ``count``.

    Under multi-worker training every worker builds its own pipeline; each
    reads only its share, so no worker decompresses, parses or augments a
    record another worker will train on.
    """

    count: int = 1
    index: int = 0

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in [0, {self.count})")


def epoch_seed(seed: int, epoch):
    """The seed of one epoch's shuffles and augmentation, from (run seed, epoch) only.

    So a resumed run draws for epoch k what an uninterrupted run draws there,
    instead of restarting the random stream at epoch 0.  The factor 7919
    keeps ``epoch_seed + k`` (augment offsets its draws by up to 6) away from
    the next epoch's seed.
    """
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 7919


def _by_record(info: DatasetInfo, shard: Shard) -> bool:
    """Fewer shard files than pipelines, or a fold view: split by record index instead of by file.

    A fold's patients are spread over the shards unevenly, so splitting by
    file could leave a worker files without one record of its fold.
    """
    return shard.count > 1 and (len(info.train_files) < shard.count or bool(info.train_patients))


def _share_files(info: DatasetInfo, shard: Shard) -> list[str]:
    files = list(info.train_files)
    return files if shard.count == 1 or _by_record(info, shard) else files[shard.index::shard.count]


def check_shard(info: DatasetInfo, shard: Shard) -> None:
    """Every pipeline needs records to read, or its epochs never fill."""
    if info.num_train < shard.count:
        raise DatasetError(f"{info.num_train} training patient(s) cannot be shared among {shard.count} workers")


def _permuted(values, seed):
    """``values`` (along axis 0) in an order drawn from a stateless ``seed`` pair.

    Stateless on purpose: ``Dataset.shuffle`` with a tensor seed fails in a
    traced function when the global seed is 0 (``keras.utils.set_random_seed(0)``),
    and the order must depend on (seed, epoch) only.
    """
    keys = tf.random.stateless_uniform(tf.shape(values)[:1], seed=seed)
    return tf.gather(values, tf.argsort(keys))


def _seed_pair(first, second):
    return tf.stack([tf.cast(first, tf.int64), tf.cast(second, tf.int64)])


def _share_records(info: DatasetInfo, shard: Shard, file_seed, deterministic: bool, cycle_length=4):
    """This pipeline's serialised records; files in an order drawn from ``file_seed`` (None: manifest order).

    Splitting by record index needs the same record order on every worker:
    the file order comes from the same seed everywhere, and the interleave is
    then kept deterministic.
    """
    files = tf.constant(_share_files(info, shard))
    if file_seed is not None:
        files = _permuted(files, file_seed)
    kind = manifest_lib.tf_compression_type(info.compression)
    by_record = _by_record(info, shard)
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=kind),
        cycle_length=min(cycle_length, int(files.shape[0])), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic or by_record)
    ds = _only_patients(ds, info.train_patients)  # before sharding: every worker filters the same order
    return ds.shard(shard.count, shard.index) if by_record else ds


def _block_shuffle(ds: tf.data.Dataset, size: int, seed) -> tf.data.Dataset:
    """Shuffle within consecutive blocks of ``size`` records, each block with its own stateless draw."""
    blocks = ds.batch(size).enumerate()
    return blocks.map(lambda i, block: _permuted(block, _seed_pair(seed, i))).unbatch()


def _one_pass(info, shard, seed, shuffle_buffer, cached, deterministic):
    """One pass over the share, ordered by ``seed`` (a pair): all of it at once when cached, else by block.

    Cached, the whole share is batched and permuted, which also reads the
    cache to its end on the first pass, so TensorFlow keeps it.
    """
    if cached is not None:
        return _block_shuffle(cached, max(info.num_train, 1), seed[0] + 1)
    records = _share_records(info, shard, seed, deterministic)
    return _block_shuffle(records, shuffle_buffer, seed[0] + 2)


def epoch_records(info: DatasetInfo, epoch, seed: int = 0, shard: Shard = Shard(), samples: int | None = None,
                  shuffle_buffer: int = 16, cached: tf.data.Dataset | None = None,
                  deterministic: bool = False) -> tf.data.Dataset:
    """The serialised records one pipeline trains on in ``epoch``: ``samples`` of them (None: one pass).

    Everything random here is drawn from :func:`epoch_seed` and the pass
    number within the epoch, so each pass of each epoch has its own order.
    ``cached``: this share's records held in memory (``data.cache``).
    """
    check_shard(info, shard)
    e_seed = epoch_seed(seed, epoch)
    if samples is None:
        return _one_pass(info, shard, _seed_pair(e_seed, 0), shuffle_buffer, cached, deterministic)
    passes = tf.data.Dataset.counter().flat_map(
        lambda p: _one_pass(info, shard, _seed_pair(e_seed, p), shuffle_buffer, cached, deterministic))
    return passes.take(samples)


def _parse_stored(info: DatasetInfo, serialized):
    """A record as stored (float16 image, uint8 one-hot mask), with the static shapes of this version."""
    example = schema.parse_tf(serialized, image_dtype=tf.float16)
    shape = list(info.volume_shape)
    example["image"] = tf.ensure_shape(example["image"], shape + [len(info.channels)])
    example["mask"] = tf.ensure_shape(example["mask"], shape + [info.num_classes])
    return example


def _sample_seed(epoch, index, seed: int):
    """A stateless seed per training sample: (epoch seed, position in the epoch)."""
    return tf.stack([tf.cast(epoch_seed(seed, epoch) % (2**31 - 1), tf.int32), tf.cast(index, tf.int32)])


def train_dataset(info: DatasetInfo, batch_size: int, aug: AugmentConfig, seed: int = 0,
                  shuffle_buffer: int = 16, cache: bool = False, deterministic: bool = False,
                  samples_per_epoch: int | None = None, first_epoch: int = 0,
                  shard: Shard = Shard()) -> tf.data.Dataset:
    """Endless stream of augmented (float32 image patch, float32 one-hot mask patch) batches.

    The stream is a sequence of epochs from ``first_epoch`` on, each of
    ``samples_per_epoch`` samples (None: one pass over the share) drawn by
    :func:`epoch_records` and augmented with per-sample seeds from (seed,
    epoch, position): a run resumed at epoch k sees the data an uninterrupted
    run sees there.  ``samples_per_epoch`` must be what the trainer consumes
    per epoch from this pipeline, so epochs and training epochs line up.
    """
    check_patch_fits(aug.patch_size, info.volume_shape)
    # serialised records (float16): about half the decoded size
    cached = _share_records(info, shard, None, True).cache() if cache else None

    def one_epoch(epoch):
        records = epoch_records(info, epoch, seed, shard, samples_per_epoch, shuffle_buffer, cached, deterministic)
        return records.enumerate().map(
            lambda i, r: augment(_parse_stored(info, r), _sample_seed(epoch, i, seed), aug),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    ds = tf.data.Dataset.counter(start=first_epoch).flat_map(one_epoch)
    # parallel batching: each sample's copy into the batch (~60 MB at 128^3) runs on its own thread
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE)


def val_dataset(info: DatasetInfo, batch_size: int = 1) -> tf.data.Dataset:
    """Whole cropped validation volumes, no augmentation, fixed order (a fold view: its fold's patients)."""
    files = info.val_files or info.train_files
    ds = tf.data.TFRecordDataset(list(files), compression_type=manifest_lib.tf_compression_type(info.compression))
    ds = _only_patients(ds, info.val_patients)
    ds = ds.map(lambda r: _image_mask(schema.parse_tf(r)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _image_mask(example):
    return example["image"], tf.cast(example["mask"], tf.float32)


def check_patch_fits(patch, volume_shape) -> None:
    if any(p > v for p, v in zip(patch, volume_shape)):
        raise DatasetError(f"patch size {tuple(patch)} is larger than the dataset's volumes {tuple(volume_shape)}")
