"""The tf.data pipeline and the training loop on the tiny pipeline output."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs.train import tiny_cpu
from shared import schema
from tests.helpers import ROOT, override
from trainer import augment as augment_lib, data, resume, targets, training


def _cfg(dataset_dir, **overrides):
    cfg = tiny_cpu.get_config()
    cfg.data_dir = dataset_dir
    cfg.patch_size = (16, 16, 16)
    cfg.epochs, cfg.steps_per_epoch = 2, 3
    cfg.val_every = 1  # these tests follow validation, checkpoints and resumes epoch by epoch
    # one output, no deep supervision: the saved model.keras then keeps the optimizer state the tests read
    cfg.deep_supervision = False
    return override(cfg, overrides)


def test_validation_stream_parses_the_records_the_pipeline_wrote(tiny_dataset):
    info = data.open_dataset(tiny_dataset.dataset_dir)
    assert info.version_id == tiny_dataset.version_id and info.channels == ("flair", "t1", "t1ce", "t2")
    assert info.compression == "GZIP"
    raw = next(iter(tf.data.TFRecordDataset(list(info.val_files), compression_type="GZIP")))
    record = schema.decode(raw.numpy())
    image, mask = next(iter(data.val_dataset(info)))
    assert image.shape == (1, 32, 32, 32, 4) and mask.shape == (1, 32, 32, 32, 4)
    np.testing.assert_array_equal(image[0].numpy(), record.image.astype(np.float32))
    np.testing.assert_array_equal(mask[0].numpy(), record.mask.astype(np.float32))


def test_validation_batches_state_their_channels_and_classes(tiny_dataset):
    # Under MultiWorkerMirroredStrategy a worker whose share of the split has run out gets an empty batch
    # built from this spec, unknown dims as 0: an unknown class count made it (0, 0, 0, 0, 0) and the
    # region loss's class->region product failed on the other worker's shapes.
    info = data.open_dataset(tiny_dataset.dataset_dir)
    image_spec, mask_spec = data.val_dataset(info).element_spec
    assert image_spec.shape[-1] == len(info.channels) and mask_spec.shape[-1] == info.num_classes
    assert image_spec.dtype == mask_spec.dtype == tf.float32


def test_augmentation_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, size=(24, 20, 28))
    image = np.stack([classes * 10.0 + c for c in range(3)], -1).astype(np.float32)  # image encodes the class
    mask = (classes[..., None] == np.arange(4)).astype(np.uint8)
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), foreground_share=0.5, flips=True, rotation=True,
                                    intensity_scale=0.0, intensity_shift=0.0)
    for s in range(12):
        img, msk = augment_lib.augment({"image": tf.constant(image), "mask": tf.constant(mask)},
                                       tf.constant([s, 7], tf.int32), aug)
        assert img.shape[:3] == (16, 16, 16) and msk.shape == (16, 16, 16, 4)
        np.testing.assert_array_equal(np.round(img.numpy()[..., 0] / 10), msk.numpy().argmax(-1))


def _labelled_volume(shape=(24, 20, 28), channels=3, seed=0):
    """An image whose every channel encodes the voxel's class (10 * class + channel + 1), and its one-hot mask."""
    classes = np.random.default_rng(seed).integers(0, 4, size=shape)
    image = np.stack([classes * 10.0 + c + 1 for c in range(channels)], -1).astype(np.float16)
    return image, (classes[..., None] == np.arange(4)).astype(np.uint8)


@pytest.mark.parametrize("xla", [True, False])
def test_a_flipped_float16_pair_still_matches(xla):
    image, mask = _labelled_volume()
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), foreground_share=0.5, flips=True,
                                    intensity_scale=0.0, intensity_shift=0.0, xla=xla)
    flipped = 0
    for s in range(12):
        seed = tf.constant([s, 3], tf.int32)
        img, msk = augment_lib.augment({"image": tf.constant(image), "mask": tf.constant(mask)}, seed, aug)
        assert img.dtype == tf.float32 and msk.dtype == tf.float32 and msk.shape == (16, 16, 16, 4)
        np.testing.assert_array_equal(np.round((img.numpy()[..., 0] - 1) / 10), msk.numpy().argmax(-1))
        # the same box, unflipped, from the numpy volume: the patch is that box mirrored on the drawn axes
        start = augment_lib._patch_start(tf.constant(mask), (16, 16, 16), 0.5, seed).numpy()
        box = image[tuple(slice(a, a + 16) for a in start)].astype(np.float32)
        axes = [a for a, f in enumerate(augment_lib._flip_coins(seed + 3).numpy()) if f]
        np.testing.assert_array_equal(img.numpy(), np.flip(box, axes) if axes else box)
        flipped += bool(axes)
    assert flipped >= 3


def test_the_xla_kernel_gives_the_same_patches_as_plain_ops():
    image, mask = _labelled_volume(shape=(20, 22, 18), channels=4, seed=1)
    image[:3] = 0  # background rows: must stay 0 under the intensity change
    for s in range(6):
        seed = tf.constant([s, 11], tf.int32)
        example = {"image": tf.constant(image), "mask": tf.constant(mask)}
        got = [augment_lib.augment(example, seed, augment_lib.AugmentConfig(patch_size=(16, 8, 16), foreground_share=0.4,
                                                                            rotation=True, xla=xla))
               for xla in (True, False)]
        np.testing.assert_allclose(got[0][0].numpy(), got[1][0].numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got[0][1].numpy(), got[1][1].numpy())
        brain = image[..., 0] != 0
        assert brain.any() and not brain.all()


def test_training_reads_uncompressed_shards(tiny_cohort, tmp_path):
    from tests.helpers import run_pipeline

    plain = run_pipeline(tiny_cohort, tmp_path, **{"shards.compression": "NONE"})
    info = data.open_dataset(plain.dataset_dir)
    assert info.compression == "NONE" and all(f.endswith(".tfrecord") for f in info.train_files)
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16))
    image, mask = next(iter(data.train_dataset(info, 2, aug, seed=1)))
    assert image.shape == (2, 16, 16, 16, 4) and image.dtype == tf.float32
    assert mask.shape == (2, 16, 16, 16, 4) and (mask.numpy().sum(-1) == 1).all()
    raw = next(iter(tf.data.TFRecordDataset(list(info.val_files))))
    val_image, _ = next(iter(data.val_dataset(info)))
    np.testing.assert_array_equal(val_image[0].numpy(), schema.decode(raw.numpy()).image.astype(np.float32))


def test_intensity_augmentation_leaves_the_background_at_zero():
    image = np.zeros((8, 8, 8, 2), np.float32)
    image[2:6, 2:6, 2:6] = 1.5
    out = augment_lib.random_intensity(tf.constant(image), 0.1, 0.1, tf.constant([1, 2], tf.int32)).numpy()
    assert (out[image[..., 0] == 0] == 0).all() and not np.allclose(out[2:6, 2:6, 2:6], 1.5)


def test_foreground_oversampling_centres_patches_on_tumour():
    mask = np.zeros((40, 40, 40, 4), np.uint8)
    mask[..., 0] = 1
    mask[30:34, 30:34, 30:34, 0], mask[30:34, 30:34, 30:34, 2] = 0, 1
    hits = 0
    for s in range(20):
        _, msk = augment_lib.random_patch(tf.zeros((40, 40, 40, 1)), tf.constant(mask), (8, 8, 8), 1.0,
                                          tf.constant([s, 1], tf.int32))
        hits += int(msk.numpy()[..., 2].any())
    assert hits == 20


def _scalars(folder) -> dict[str, list[int]]:
    """tag -> the steps it was logged at, from a TensorBoard events folder."""
    steps: dict[str, list[int]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_short_training_lowers_the_loss_and_writes_the_run(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset.dataset_dir, epochs=4, steps_per_epoch=5)
    outcome = training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None)
    with open(outcome.history_csv) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    for name in ("config.json", "lineage.json", "model.keras", "saved_model", "tensorboard", "checkpoints"):
        assert os.path.exists(tmp_path / name), name
    assert "val_dice_wt" in outcome.val_metrics
    assert _scalars(tmp_path / "tensorboard" / "train")["epoch_loss"] == [1, 2, 3, 4]
    assert _scalars(tmp_path / "tensorboard" / "validation")["epoch_dice_wt"] == [1, 2, 3, 4]
    lineage = (tmp_path / "lineage.json").read_text()
    assert tiny_dataset.version_id in lineage
    reloaded = keras.models.load_model(outcome.model_path)
    assert reloaded.output_shape[-1] == 3 and targets.model_target(reloaded) == "regions"  # tiny_cpu: WT/TC/ET


class _Interrupt(keras.callbacks.Callback):
    """A kill at the start of epoch ``epoch``, after the previous epoch's backup."""

    def __init__(self, epoch):
        super().__init__()
        self._epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self._epoch:
            raise KeyboardInterrupt("simulated kill")


def _history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _finished_run(workdir):
    """What a run leaves that a resume must reproduce."""
    net = keras.models.load_model(workdir / "model.keras")
    best = keras.models.load_model(workdir / "checkpoints" / "best.keras", compile=False)
    return {"weights": net.get_weights(), "iterations": int(net.optimizer.iterations.numpy()),
            "best": best.get_weights(), "history": _history(workdir / "history.csv"),
            "state": resume.read_state(str(workdir / "backup"))}


def _assert_same_run(a, b, tol=1e-5):
    assert a["iterations"] == b["iterations"]
    for x, y in zip(a["weights"] + a["best"], b["weights"] + b["best"], strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
    assert [r["epoch"] for r in a["history"]] == [r["epoch"] for r in b["history"]]
    for ra, rb in zip(a["history"], b["history"]):
        assert ra.keys() == rb.keys()
        np.testing.assert_allclose([float(ra[k]) for k in ra], [float(rb[k]) for k in ra], rtol=tol, atol=tol)
    sa, sb = a["state"], b["state"]
    assert (sa.epoch, sa.best_epoch, sa.stopping_wait, sa.stopping_best_epoch, sa.finished) == \
           (sb.epoch, sb.best_epoch, sb.stopping_wait, sb.stopping_best_epoch, sb.finished)
    np.testing.assert_allclose(sa.best, sb.best, rtol=tol)


@pytest.mark.slow  # three short training runs (about 1-1.5 min on 2 cores): make test-all
def test_a_killed_and_resumed_run_ends_as_an_uninterrupted_one(tiny_dataset, tmp_path, monkeypatch):
    # ordered input, without switching the whole test process to deterministic ops for good
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: None)
    cfg = _cfg(tiny_dataset.dataset_dir, epochs=4, deterministic=True, early_stopping_patience=3)
    quiet = dict(echo=lambda *_: None)
    training.train_and_evaluate(cfg, str(tmp_path / "whole"), **quiet)
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(cfg, str(tmp_path / "killed"), extra_callbacks=[_Interrupt(2)], **quiet)
    assert resume.read_state(str(tmp_path / "killed" / "backup")).epoch == 2
    resumed = training.train_and_evaluate(cfg, str(tmp_path / "killed"), **quiet)
    assert resumed.epochs_run == 2  # epochs 3 and 4 only
    whole = _finished_run(tmp_path / "whole")
    assert [int(r["epoch"]) for r in whole["history"]] == [0, 1, 2, 3] and whole["state"].finished
    assert whole["iterations"] == 4 * 3
    _assert_same_run(whole, _finished_run(tmp_path / "killed"))


@pytest.mark.slow  # three trainer launches through the CLI (~75 s on 2 cores); the resume test above stays fast
def test_a_finished_run_is_not_trained_again_unless_asked(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset.dataset_dir, epochs=1, steps_per_epoch=2)
    training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None)
    model_bytes, history = (tmp_path / "model.keras").read_bytes(), _history(tmp_path / "history.csv")
    said = []
    again = training.train_and_evaluate(cfg, str(tmp_path), echo=said.append)
    assert again.already_finished and again.epochs_run == 0 and "val_dice_mean" in again.val_metrics
    assert "has finished training (1 epoch(s))" in said[0] and "continue_training" in said[0]
    assert (tmp_path / "model.keras").read_bytes() == model_bytes and _history(tmp_path / "history.csv") == history
    cli = subprocess.run([sys.executable, "-m", "trainer.train", "--config=configs/train/tiny_cpu.py",
                          f"--workdir={tmp_path}", f"--config.data_dir={tiny_dataset.dataset_dir}"],
                         cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 0 and "has finished training" in cli.stdout, cli.stderr[-2000:]

    with pytest.raises(training.LaunchError, match="raise --config.epochs above 1"):
        training.train_and_evaluate(override(cfg, {"continue_training": True}), str(tmp_path), echo=lambda *_: None)
    more = training.train_and_evaluate(override(cfg, {"continue_training": True, "epochs": 2}), str(tmp_path),
                                       echo=lambda *_: None)
    assert more.epochs_run == 1 and not more.already_finished
    assert [int(r["epoch"]) for r in _history(tmp_path / "history.csv")] == [0, 1]
    assert keras.models.load_model(tmp_path / "model.keras").optimizer.iterations.numpy() == 4


class _Net:
    """Just enough of a model for callbacks driven by hand."""

    def __init__(self):
        self.net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        self.net.compile(optimizer="adam", loss="mse")


def test_resumed_callbacks_keep_the_best_checkpoint_and_the_patience_used(tiny_dataset, tmp_path):
    """After a restart a worse first validation must neither replace best.keras nor reset patience."""
    cfg = dict(_cfg(tiny_dataset.dataset_dir, early_stopping_patience=2).to_dict(), num_val_patients=1,
               challenge="brats2020")  # the trainer sets both from the dataset before building callbacks
    state = resume.RunState(epoch=5, best=0.9, best_epoch=3, stopping_wait=1, stopping_best=0.9, stopping_best_epoch=3)
    net = _Net().net
    callbacks = keras.callbacks.CallbackList(training._callbacks(cfg, str(tmp_path), state, lambda *_: None),
                                             model=net)
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(5)
    callbacks.on_epoch_end(5, {"loss": 1.0, "val_loss": 1.0, resume.MONITOR: 0.5})
    assert not (tmp_path / "checkpoints" / "best.keras").exists()
    assert net.stop_training  # the second epoch without improvement, patience 2
    saved = resume.read_state(str(tmp_path / "backup"))
    assert (saved.epoch, saved.best, saved.best_epoch, saved.stopping_wait) == (6, 0.9, 3, 2)
    callbacks.on_epoch_begin(6)
    callbacks.on_epoch_end(6, {"loss": 1.0, "val_loss": 1.0, resume.MONITOR: 0.95})
    assert (tmp_path / "checkpoints" / "best.keras").exists()
    assert resume.read_state(str(tmp_path / "backup")).best_epoch == 6


def test_an_epoch_without_validation_does_not_replace_the_best_checkpoint(tmp_path):
    checkpoint = resume.BestCheckpoint(str(tmp_path / "best.keras"), best=None)
    checkpoint.set_model(_Net().net)
    checkpoint.on_train_begin()
    checkpoint.on_epoch_end(0, {"loss": 1.0})  # val_every > 1: no val_dice_mean this epoch
    assert not (tmp_path / "best.keras").exists()


def test_history_keeps_one_row_per_epoch_on_resume(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\r\n0,1.0\r\n1,0.9\r\n2,0.8\r\n")
    resume.trim_history(str(path), 2)
    assert [r["epoch"] for r in _history(path)] == ["0", "1"]
    resume.trim_history(str(path), 0)
    assert not path.exists()


@pytest.mark.parametrize("change, message", [
    ({"data_dir": "/nowhere/at/all"}, "manifest.json not found"),
    ({"patch_size": (64, 64, 64)}, "larger than the dataset's volumes"),
    ({"patch_size": (18, 16, 16)}, "divisible"),
    ({"require_gpu": True}, "no GPU"),
    ({"loss": "focal"}, "unknown loss"),
])
def test_bad_requests_fail_before_training(tiny_dataset, tmp_path, change, message):
    cfg = _cfg(tiny_dataset.dataset_dir, **change)
    if change.get("require_gpu") and tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    with pytest.raises(training.LaunchError, match=message):
        training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None)
    assert not (tmp_path / "config.json").exists()


def test_an_unverifiable_dataset_is_refused_with_the_cli(tiny_dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_dataset.dataset_dir, copy)
    shard = sorted(copy.glob("train-*.tfrecord.gz"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    done = subprocess.run([sys.executable, "-m", "trainer.train", "--config=configs/train/tiny_cpu.py",
                           f"--workdir={tmp_path / 'run'}", f"--config.data_dir={copy}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "does not match its manifest" in done.stderr
    bad_field = subprocess.run([sys.executable, "-m", "trainer.train", "--config=configs/train/tiny_cpu.py",
                                f"--workdir={tmp_path / 'run'}", "--config.no_such_field=1"],
                               cwd=ROOT, capture_output=True, text=True)
    assert bad_field.returncode != 0 and "no_such_field" in bad_field.stderr


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # two TF processes with gRPC collectives: kept out of the fast suite
def test_two_workers_train_together_on_localhost(tiny_dataset, tmp_path):
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}),
                   CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "trainer.train", "--config=configs/train/tiny_cpu.py", f"--workdir={tmp_path}",
             f"--config.data_dir={tiny_dataset.dataset_dir}", "--config.patch_size=16,16,16",
             "--config.epochs=1", "--config.steps_per_epoch=2", "--config.batch_size=4"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outputs = [p.communicate()[0] for p in procs]
        pytest.fail("two-worker run timed out:\n" + "\n----\n".join(o[-3000:] for o in outputs))
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "2 replica(s)" in outputs[0]
    assert (tmp_path / "model.keras").exists() and (tmp_path / "history.csv").exists()
    assert (tmp_path / "worker_1").exists() and not (tmp_path / "worker_1" / "model.keras").exists()


def _patient_ids(records: tf.data.Dataset) -> list[str]:
    return [schema.parse_tf(r)["patient_id"].numpy().decode() for r in records]


def _one_file_per_record(info, folder):
    """The training records rewritten one per GZIP shard, so a share can be split by file."""
    files = []
    raw = tf.data.TFRecordDataset(list(info.train_files), compression_type="GZIP")
    for n, record in enumerate(raw):
        path = str(folder / f"train-{n:05d}.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            writer.write(record.numpy())
        files.append(path)
    return dataclasses.replace(info, train_files=tuple(files))


@pytest.mark.parametrize("split", ["by_file", "by_record"])
def test_two_workers_read_disjoint_shares_that_cover_each_epoch(tiny_dataset, tmp_path, split):
    info = data.open_dataset(tiny_dataset.dataset_dir)
    if split == "by_file":
        info = _one_file_per_record(info, tmp_path)
    assert (len(info.train_files) >= 2) == (split == "by_file")
    everyone = sorted(_patient_ids(tf.data.TFRecordDataset(list(info.train_files), compression_type="GZIP")))
    assert len(everyone) == info.num_train >= 3
    for epoch in (0, 1):
        shares = [_patient_ids(data.epoch_records(info, epoch, seed=5, shard=data.Shard(2, w))) for w in (0, 1)]
        assert not set(shares[0]) & set(shares[1]), shares
        assert sorted(shares[0] + shares[1]) == everyone
        cached = [[e["patient_id"].numpy().decode() for e in data.epoch_records(
                      info, epoch, seed=5, shard=data.Shard(2, w), cached=data.decoded_cache(info, data.Shard(2, w)))]
                  for w in (0, 1)]
        assert sorted(cached[0]) == sorted(shares[0]) and sorted(cached[1]) == sorted(shares[1])


@pytest.mark.parametrize("cache", [True, False])
def test_each_pass_has_its_own_order(tiny_dataset, cache):
    # Passes over the cache (and over a single shard file) drew one order per epoch and repeated it in every
    # pass (they kept only the epoch's seed); epoch_records promises each pass of each epoch its own order
    info = data.open_dataset(tiny_dataset.dataset_dir)
    assert len(info.train_files) == 1  # file order cannot vary: the records' order within the file must
    cached = data.decoded_cache(info) if cache else None

    def patient(e):
        return (e["patient_id"] if cache else schema.parse_tf(e)["patient_id"]).numpy().decode()

    ids = [patient(e) for e in data.epoch_records(info, 0, seed=3, samples=8 * info.num_train, cached=cached)]
    passes = [tuple(ids[i:i + info.num_train]) for i in range(0, len(ids), info.num_train)]
    assert all(sorted(p) == sorted(passes[0]) and len(set(p)) == info.num_train for p in passes)
    assert len(set(passes)) > 1, passes
    again = [patient(e) for e in data.epoch_records(info, 0, seed=3, samples=8 * info.num_train, cached=cached)]
    assert again == ids  # drawn from (seed, epoch, pass) only


def test_a_cached_stream_parses_each_record_once(tiny_dataset, monkeypatch):
    # Parsing a full-size record for every patch cost more CPU than the training step (BUILD_NOTES): with
    # data.cache each record is parsed once, however many patches are cut from it
    info = data.open_dataset(tiny_dataset.dataset_dir)
    parsed = tf.Variable(0, dtype=tf.int64)
    parse = data._parse_stored

    def counting(info_, serialized):
        with tf.control_dependencies([parsed.assign_add(1)]):
            return {k: tf.identity(v) for k, v in parse(info_, serialized).items()}

    monkeypatch.setattr(data, "_parse_stored", counting)
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), xla=False)
    samples = 6 * info.num_train  # 3 epochs of 2 passes over the records, 2 samples a batch
    for cache in (True, False):
        parsed.assign(0)
        stream = data.train_dataset(info, 2, aug, cache=cache, samples_per_epoch=2 * info.num_train)
        for _ in stream.take(samples // 2):
            pass
        if cache:
            assert int(parsed.numpy()) == info.num_train
        else:  # the stream without a cache parses every sample (and may read ahead)
            assert int(parsed.numpy()) >= samples


@pytest.mark.parametrize("pick", ["voxel", "class"])
def test_a_cached_stream_lists_each_records_tumour_once(tiny_dataset, monkeypatch, pick):
    # A foreground patch listed every tumour voxel of its whole record (a class pick cost more CPU than the
    # patch's training step at full size); the cache lists them once per record, as the pick needs them
    info = data.open_dataset(tiny_dataset.dataset_dir)
    scans = []
    scan = augment_lib._tumour_voxels
    monkeypatch.setattr(augment_lib, "_tumour_voxels", lambda *a: scans.append(a) or scan(*a))
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), xla=False, foreground_share=1.0, foreground_pick=pick)
    for cache in (True, False):
        scans.clear()
        for _ in data.train_dataset(info, 2, aug, cache=cache, samples_per_epoch=4).take(2):
            pass
        assert bool(scans) == (not cache), cache
    cached = data.decoded_cache(info, pick=pick)
    for example in cached.examples:
        listed = augment_lib.tumour_index(example["mask"], pick)
        assert example[augment_lib.TUMOUR_VOXELS].numpy().tolist() == listed[augment_lib.TUMOUR_VOXELS].numpy().tolist()
        assert example[augment_lib.TUMOUR_VOXELS].shape[0] > 0


def test_a_stream_started_at_epoch_k_is_the_tail_of_the_stream_from_epoch_0(tiny_dataset):
    info = data.open_dataset(tiny_dataset.dataset_dir)
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), xla=False)

    def batches(first_epoch, count):
        ds = data.train_dataset(info, 2, aug, seed=3, deterministic=True, samples_per_epoch=4, first_epoch=first_epoch)
        return [image.numpy() for image, _ in ds.take(count)]

    from_start, resumed = batches(0, 6), batches(2, 2)  # 2 batches per epoch
    for a, b in zip(from_start[4:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(from_start[0], from_start[2])  # epochs differ from one another


@pytest.mark.parametrize("cluster, tasks", [
    ({"chief": ["c:1"], "worker": ["w:1"]}, [("chief", 0), ("worker", 0)]),
    ({"chief": ["c:1"], "worker": ["w:1", "w:2"]}, [("chief", 0), ("worker", 0), ("worker", 1)]),
    ({"worker": ["w:1", "w:2", "w:3"]}, [("worker", 0), ("worker", 1), ("worker", 2)]),
])
def test_every_cluster_has_exactly_one_chief_and_one_input_pipeline_per_task(monkeypatch, cluster, tasks):
    from trainer import runtime

    chiefs, pipelines = [], []
    for kind, index in tasks:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))
        assert runtime.cluster_spec() is not None
        chiefs.append(runtime.is_chief())
        pipelines.append(runtime.input_pipeline())
    assert chiefs.count(True) == 1 and chiefs[0]
    assert pipelines == [(len(tasks), i) for i in range(len(tasks))]


def test_tf_config_of_one_task_or_of_a_task_not_in_the_cluster(monkeypatch):
    from trainer import runtime

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["w:1"]}, "task": {"type": "worker", "index": 0}}))
    assert runtime.cluster_spec() is None and runtime.is_chief() and runtime.input_pipeline() == (1, 0)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    with pytest.raises(runtime.RuntimeConfigError, match="'worker' index 1 is not one of"):
        runtime.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(runtime.RuntimeConfigError, match="TF_CONFIG is not JSON"):
        runtime.cluster_spec()


def test_a_share_of_no_patients_is_refused(tiny_dataset):
    info = data.open_dataset(tiny_dataset.dataset_dir)
    with pytest.raises(data.DatasetError, match=f"{info.num_train} training patient.*among {info.num_train + 1}"):
        data.epoch_records(info, 0, shard=data.Shard(info.num_train + 1, 0))


def test_validation_epochs_always_end_with_the_last():
    """A run validating every 4th of 10 epochs still validates its last (its summary and best checkpoint need it)."""
    from trainer.training import validation_epochs

    assert validation_epochs(1, 3) == [1, 2, 3]
    assert validation_epochs(4, 10) == [4, 8, 10]
    assert validation_epochs(8, 8) == [8]
    assert validation_epochs(20, 3) == [3]
    with pytest.raises(ValueError, match="val_every"):
        validation_epochs(0, 3)
