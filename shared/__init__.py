"""The contract every package imports, and that imports none of them.

Everything the core (``preprocessing``), the data engine (``beam_pipeline``),
training (``trainer``), serving (``serving``) and the app must agree on lives
here and only here: the label conventions and tumour regions, the layouts of
the BraTS releases, the TFRecord schema, the preprocessing spec, the dataset
manifest, failure reports, the storage layer, the volume operations that
prediction must repeat exactly, and the metrics.
"""

__version__ = "0.1.0"
