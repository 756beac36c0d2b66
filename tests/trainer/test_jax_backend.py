"""The model, losses and metrics under Keras' JAX backend, with no TensorFlow (the GPU figure path).

``benchmarks/bench_train.py`` must run on a machine with JAX but no
TensorFlow, so everything a training step touches (trainer.model,
trainer.losses, trainer.metrics, trainer.targets, shared.regions) may use
Keras ops only.  Each check runs in a subprocess with ``KERAS_BACKEND=jax``
and fails if TensorFlow was imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytest.importorskip("jax")  # pinned in requirements.txt / constraints.txt

STEP = r"""
import json, sys
import keras, numpy as np
from shared import challenges
from trainer import model as model_lib, targets

challenge = challenges.get("brats2023_gli")
spec = targets.model_spec(model_lib.UNetSpec(depth=3, base_filters=4, dropout=(), normalization="instance",
                                             activation="leaky_relu"), sys.argv[1], challenge)
net = targets.compiled_model((None, None, None, 2), spec, sys.argv[1], challenge, "dice_ce",
                             keras.optimizers.Adam(1e-3), deep_supervision=sys.argv[2] == "1")
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 8, 8, 8, 2)).astype("float32")
y = np.eye(4, dtype="float32")[rng.integers(0, 4, (2, 8, 8, 8))]
logs = net.train_on_batch(x, y, return_dict=True)
print(json.dumps({"backend": keras.backend.backend(), "tensorflow": "tensorflow" in sys.modules,
                  "logs": {k: float(v) for k, v in logs.items()}}))
"""


def _run_under_jax(*args):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", STEP, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# make test runs the class model's step; the region model with deep supervision
# (about as long again) runs in make test-all
@pytest.mark.parametrize("target, deep", [pytest.param("regions", "1", marks=pytest.mark.slow), ("classes", "0")])
def test_one_training_step_under_jax_without_tensorflow(target, deep):
    found = _run_under_jax(target, deep)
    assert found["backend"] == "jax" and found["tensorflow"] is False
    assert all(v == v for v in found["logs"].values())  # no NaN
    assert {"loss", "dice_wt", "dice_tc", "dice_et", "dice_mean"} <= set(found["logs"])


@pytest.mark.slow  # minutes: XLA compiles the tiny preset's whole training step
def test_bench_train_runs_a_step_under_jax_without_tensorflow():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--_child=tiny,16,float32", "--steps=1",
                           "--target=regions", "--deep_supervision"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert "error" not in result, result
    assert result["keras_backend"] == "jax" and result["tensorflow_imported"] is False
    assert result["timed_steps"] == 1
