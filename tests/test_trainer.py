"""The tf.data pipeline and the training loop on the tiny pipeline output."""

from __future__ import annotations

import csv
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
from tests.conftest import ROOT, override
from trainer import data, training


def _cfg(dataset_dir, **overrides):
    cfg = tiny_cpu.get_config()
    cfg.data_dir = dataset_dir
    cfg.patch_size = (16, 16, 16)
    cfg.epochs, cfg.steps_per_epoch = 2, 3
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


def test_augmentation_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, size=(24, 20, 28))
    image = np.stack([classes * 10.0 + c for c in range(3)], -1).astype(np.float32)  # image encodes the class
    mask = (classes[..., None] == np.arange(4)).astype(np.uint8)
    aug = data.AugmentConfig(patch_size=(16, 16, 16), foreground_share=0.5, flips=True, rotation=True,
                             intensity_scale=0.0, intensity_shift=0.0)
    for s in range(12):
        img, msk = data.augment({"image": tf.constant(image), "mask": tf.constant(mask)},
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
    aug = data.AugmentConfig(patch_size=(16, 16, 16), foreground_share=0.5, flips=True,
                             intensity_scale=0.0, intensity_shift=0.0, xla=xla)
    flipped = 0
    for s in range(12):
        seed = tf.constant([s, 3], tf.int32)
        img, msk = data.augment({"image": tf.constant(image), "mask": tf.constant(mask)}, seed, aug)
        assert img.dtype == tf.float32 and msk.dtype == tf.float32 and msk.shape == (16, 16, 16, 4)
        np.testing.assert_array_equal(np.round((img.numpy()[..., 0] - 1) / 10), msk.numpy().argmax(-1))
        # the same box, unflipped, from the numpy volume: the patch is that box mirrored on the drawn axes
        start = data._patch_start(tf.constant(mask), (16, 16, 16), 0.5, seed).numpy()
        box = image[tuple(slice(a, a + 16) for a in start)].astype(np.float32)
        axes = [a for a, f in enumerate(data._flip_coins(seed + 3).numpy()) if f]
        np.testing.assert_array_equal(img.numpy(), np.flip(box, axes) if axes else box)
        flipped += bool(axes)
    assert flipped >= 3


def test_the_xla_kernel_gives_the_same_patches_as_plain_ops():
    image, mask = _labelled_volume(shape=(20, 22, 18), channels=4, seed=1)
    image[:3] = 0  # background rows: must stay 0 under the intensity change
    for s in range(6):
        seed = tf.constant([s, 11], tf.int32)
        example = {"image": tf.constant(image), "mask": tf.constant(mask)}
        got = [data.augment(example, seed, data.AugmentConfig(patch_size=(16, 8, 16), foreground_share=0.4,
                                                              rotation=True, xla=xla)) for xla in (True, False)]
        np.testing.assert_allclose(got[0][0].numpy(), got[1][0].numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got[0][1].numpy(), got[1][1].numpy())
        brain = image[..., 0] != 0
        assert brain.any() and not brain.all()


def test_training_reads_uncompressed_shards(tiny_cohort, tmp_path):
    from tests.conftest import run_pipeline

    plain = run_pipeline(tiny_cohort, tmp_path, **{"shards.compression": "NONE"})
    info = data.open_dataset(plain.dataset_dir)
    assert info.compression == "NONE" and all(f.endswith(".tfrecord") for f in info.train_files)
    aug = data.AugmentConfig(patch_size=(16, 16, 16))
    image, mask = next(iter(data.train_dataset(info, 2, aug, seed=1)))
    assert image.shape == (2, 16, 16, 16, 4) and image.dtype == tf.float32
    assert mask.shape == (2, 16, 16, 16, 4) and (mask.numpy().sum(-1) == 1).all()
    raw = next(iter(tf.data.TFRecordDataset(list(info.val_files))))
    val_image, _ = next(iter(data.val_dataset(info)))
    np.testing.assert_array_equal(val_image[0].numpy(), schema.decode(raw.numpy()).image.astype(np.float32))


def test_intensity_augmentation_leaves_the_background_at_zero():
    image = np.zeros((8, 8, 8, 2), np.float32)
    image[2:6, 2:6, 2:6] = 1.5
    out = data.random_intensity(tf.constant(image), 0.1, 0.1, tf.constant([1, 2], tf.int32)).numpy()
    assert (out[image[..., 0] == 0] == 0).all() and not np.allclose(out[2:6, 2:6, 2:6], 1.5)


def test_foreground_oversampling_centres_patches_on_tumour():
    mask = np.zeros((40, 40, 40, 4), np.uint8)
    mask[..., 0] = 1
    mask[30:34, 30:34, 30:34, 0], mask[30:34, 30:34, 30:34, 2] = 0, 1
    hits = 0
    for s in range(20):
        _, msk = data.random_patch(tf.zeros((40, 40, 40, 1)), tf.constant(mask), (8, 8, 8), 1.0,
                                   tf.constant([s, 1], tf.int32))
        hits += int(msk.numpy()[..., 2].any())
    assert hits == 20


def test_short_training_lowers_the_loss_and_writes_the_run(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset.dataset_dir, epochs=4, steps_per_epoch=5)
    outcome = training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None)
    with open(outcome.history_csv) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    for name in ("config.json", "lineage.json", "model.keras", "saved_model", "tensorboard", "checkpoints"):
        assert os.path.exists(tmp_path / name), name
    assert "val_dice_wt" in outcome.val_metrics
    lineage = (tmp_path / "lineage.json").read_text()
    assert tiny_dataset.version_id in lineage
    reloaded = keras.models.load_model(outcome.model_path)
    assert reloaded.output_shape[-1] == 4


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")


def test_relaunch_after_interruption_resumes_from_the_saved_epoch(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset.dataset_dir, epochs=4)
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None, extra_callbacks=[_Interrupt()])
    assert os.path.exists(tmp_path / "backup")
    outcome = training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None)
    with open(outcome.history_csv) as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2, 3]  # the relaunch ran epochs 2 and 3 only


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
    import json

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
