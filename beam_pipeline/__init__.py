"""The data engine: BraTS NIfTI cohorts to versioned, sharded TFRecords.

ITK (under antspyx) picks its thread count when it first runs, and results
differ in the last digits between thread counts.  Pinning one thread per
worker process here, before anything imports ``ants``, makes N4 output
byte-reproducible; Beam supplies the parallelism across patients instead.
"""

import os

os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # workers import TF only to write records: keep its start-up chatter out
