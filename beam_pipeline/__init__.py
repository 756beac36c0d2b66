"""The data engine: BraTS NIfTI cohorts to versioned, sharded TFRecords.

This package only fans the Beam-free core (``preprocessing``) out over a
cohort, one patient per element, and writes the shards and the manifest;
it runs unchanged on FnApiRunner, DaskRunner and Dataflow.
"""
