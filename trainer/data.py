"""tf.data input pipelines over a verified dataset version.

Training, one epoch after another, each seeded from (seed, epoch): this
pipeline's share of the shard files, shuffled -> parallel interleave of
TFRecordDatasets (GZIP or uncompressed, as the manifest's record.compression
says) [or the share cached in memory] -> shuffle -> the epoch's samples ->
parse (shared schema) + augment (``trainer.augment``) -> batch -> prefetch.  Validation: whole cropped volumes, no
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
from trainer.augment import AugmentConfig, augment, tumour_index


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
    volume_shape: tuple[int | None, int | None, int | None]  # cropped grid of every record; None: per record (bbox)
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
    # Where records differ in shape (crop mode bbox): what every record dim is a multiple of; None otherwise.
    volume_multiple: int | None = None


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
        volume_shape=(None, None, None) if shape is None else tuple(int(s) for s in shape),
        volume_multiple=preprocessing.shape_multiple,
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
    keeps ``epoch_seed + k`` (augment offsets its draws by up to 25) away from
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
    """Shuffle within consecutive blocks of ``size`` records, each block with its own stateless draw from
    ``seed`` (a pair)."""
    blocks = ds.batch(size).enumerate()
    return blocks.map(lambda i, block: _permuted(block, tf.random.experimental.stateless_fold_in(seed, i))).unbatch()


@dataclasses.dataclass(frozen=True)
class DecodedCache:
    """This pipeline's share of the training records, parsed once and held in memory (``data.cache``).

    Parsed, not serialised: at full size a record is tens of MB, and parsing
    it again for every 32³ patch cost more CPU than the training step itself.
    A parsed record takes the same memory as its serialised bytes (float16
    image, uint8 mask).  ``examples`` has been read to its end once, so every
    later reader shares the cache; ``count`` is how many records it holds.
    """

    examples: tf.data.Dataset
    count: int


def decoded_cache(info: DatasetInfo, shard: Shard = Shard(), pick: str | None = None) -> DecodedCache:
    """Parse this pipeline's share of the training records into memory (manifest order); see :class:`DecodedCache`.

    ``pick``: how foreground patches are centred (``augment.foreground_pick``); each record then also
    keeps its tumour voxels listed that way (:func:`trainer.augment.tumour_index`), so no patch scans
    the whole volume for them.
    """
    def parsed(serialized):
        example = _parse_stored(info, serialized)
        return example if pick is None else {**example, **tumour_index(example["mask"], pick)}

    examples = _share_records(info, shard, None, True).map(
        parsed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    count = 0
    for _ in examples:  # a complete read: TensorFlow keeps an in-memory cache only once it has reached the end
        count += 1
    return DecodedCache(examples, count)


def _from_cache(cached: DecodedCache, seed) -> tf.data.Dataset:
    """Every cached example once, in an order drawn from ``seed`` (a pair: each pass its own order).

    Each example is picked by its position, so nothing is copied: the whole
    share is never batched and gathered as serialised records were.
    """
    keys = tf.random.stateless_uniform([cached.count], seed=seed)
    order = tf.data.Dataset.from_tensor_slices(tf.cast(tf.argsort(keys), tf.int64))
    return order.flat_map(lambda k: cached.examples.skip(k).take(1))


def _one_pass(info, shard, seed, shuffle_buffer, cached, deterministic):
    """One pass over the share, ordered by ``seed`` (a pair): all of it at once when cached, else by block."""
    if cached is not None:
        return _from_cache(cached, _seed_pair(seed[0] + 1, seed[1]))
    records = _share_records(info, shard, seed, deterministic)
    return _block_shuffle(records, shuffle_buffer, _seed_pair(seed[0] + 2, seed[1]))


def epoch_records(info: DatasetInfo, epoch, seed: int = 0, shard: Shard = Shard(), samples: int | None = None,
                  shuffle_buffer: int = 16, cached: DecodedCache | None = None,
                  deterministic: bool = False) -> tf.data.Dataset:
    """The serialised records one pipeline trains on in ``epoch`` (parsed examples when ``cached``):
    ``samples`` of them (None: one pass).

    Everything random here is drawn from :func:`epoch_seed` and the pass
    number within the epoch, so each pass of each epoch has its own order.
    ``cached``: this share's records parsed in memory (:func:`decoded_cache`, ``data.cache``).
    """
    check_shard(info, shard)
    e_seed = epoch_seed(seed, epoch)
    if samples is None:
        return _one_pass(info, shard, _seed_pair(e_seed, 0), shuffle_buffer, cached, deterministic)
    passes = tf.data.Dataset.counter().flat_map(
        lambda p: _one_pass(info, shard, _seed_pair(e_seed, p), shuffle_buffer, cached, deterministic))
    return passes.take(samples)


def _parse_stored(info: DatasetInfo, serialized):
    """A record as stored (float16 image, uint8 one-hot mask), with the static shapes of this version
    (spatial dims unknown where records differ in shape: crop mode bbox)."""
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
    pick = aug.foreground_pick if aug.foreground_share > 0 else None
    cached = decoded_cache(info, shard, pick) if cache else None

    def example(record):
        return record if cached is not None else _parse_stored(info, record)

    def one_epoch(epoch):
        records = epoch_records(info, epoch, seed, shard, samples_per_epoch, shuffle_buffer, cached, deterministic)
        return records.enumerate().map(
            lambda i, r: augment(example(r), _sample_seed(epoch, i, seed), aug),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    ds = tf.data.Dataset.counter(start=first_epoch).flat_map(one_epoch)
    # parallel batching: each sample's copy into the batch (~60 MB at 128^3) runs on its own thread
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE)


def val_dataset(info: DatasetInfo, batch_size: int = 1) -> tf.data.Dataset:
    """Whole cropped validation volumes, no augmentation, fixed order (a fold view: its fold's patients).

    Records may differ in shape (crop mode bbox): keep ``batch_size`` 1 there, which the trainer does.
    """
    files = info.val_files or info.train_files
    ds = tf.data.TFRecordDataset(list(files), compression_type=manifest_lib.tf_compression_type(info.compression))
    ds = _only_patients(ds, info.val_patients)
    # parsed with the version's static channel and class counts: under MultiWorkerMirroredStrategy a replica
    # with no patient left gets an empty batch built from this spec
    ds = ds.map(lambda r: _image_mask(_parse_stored(info, r)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _image_mask(example):
    return tf.cast(example["image"], tf.float32), tf.cast(example["mask"], tf.float32)


def check_patch_fits(patch, volume_shape) -> None:
    """A patch larger than a dataset's one record shape is refused; where records differ in shape (None
    dims, crop mode bbox) any patch goes: a record smaller than it is padded (``augment.pad_to_patch``)."""
    if any(v is not None and p > v for p, v in zip(patch, volume_shape)):
        raise DatasetError(f"patch size {tuple(patch)} is larger than the dataset's volumes {tuple(volume_shape)}")


def check_whole_volumes(info: DatasetInfo, depth: int) -> None:
    """Validation runs the U-Net on whole records: each dim must halve ``depth - 1`` times.

    Records of one shape are checked by ``model.check_patch_size``; records of a shape each (bbox) are
    multiples of ``crop.multiple``, which the U-Net's 2**(depth-1) must divide.
    """
    factor = 2 ** (depth - 1)
    if info.volume_multiple is not None and info.volume_multiple % factor:
        raise DatasetError(f"{info.data_dir}: records are multiples of {info.volume_multiple} voxels (crop.multiple), "
                           f"which a U-Net of depth {depth} cannot take whole (it needs multiples of {factor}): "
                           f"preprocess with --config.crop.multiple={factor} or train a shallower model")
