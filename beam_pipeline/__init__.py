"""The data engine: BraTS NIfTI cohorts to versioned, sharded TFRecords.

This package only fans the Beam-free core (``preprocessing``) out over a
cohort, one patient per element, and writes the shards and the manifest;
it runs unchanged on FnApiRunner, DaskRunner and Dataflow.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # workers import TF only to write records: keep its start-up chatter out
