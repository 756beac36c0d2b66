"""The contract between the data engine (``beam_pipeline``) and the trainer.

Everything that both sides must agree on lives here and only here: the label
conventions and tumour regions, the layouts of the BraTS releases, the volume
operations that prediction must repeat exactly, the TFRecord schema and the
dataset manifest.
"""

__version__ = "0.1.0"
