"""3D U-Net trainer: model builder, losses and epoch-level Dice metrics.

The trainer consumes the TFRecords written by ``beam_pipeline`` (z-scored
channels-last images, one-hot uint8 masks over ``shared.labels`` classes) and
is written against Keras 3 so the model code does not depend on tf.keras.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up INFO/WARNING lines
# TensorFlow's caching (BFC) allocator for CPU tensors.  With the default
# malloc every 10-60 MB tensor of the input pipeline is mmap'ed, page-faulted
# in and unmapped again, which made a cast or a batch copy 5-10x slower than
# the copy itself (benchmarks/bench_input.py).  Read when TensorFlow first
# allocates, so it only takes effect if set before that.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
