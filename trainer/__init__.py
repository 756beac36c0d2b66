"""3D U-Net trainer: model builder, losses and epoch-level Dice metrics.

The trainer consumes the TFRecords written by ``beam_pipeline`` (z-scored
channels-last images, one-hot uint8 masks over ``shared.labels`` classes) and
is written against Keras 3 so the model code does not depend on tf.keras.
"""
