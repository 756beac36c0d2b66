"""3D U-Net trainer: model builder, losses and epoch-level Dice metrics.

The trainer consumes the TFRecords written by ``beam_pipeline`` (z-scored
channels-last images, one-hot uint8 masks over ``shared.labels`` classes) and
is written against Keras 3 so the model code does not depend on tf.keras.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up INFO/WARNING lines
