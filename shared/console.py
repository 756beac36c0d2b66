"""Logging set-up shared by the command-line entry points."""

from __future__ import annotations

import logging
import sys

OUR_PACKAGES = ("beam_pipeline", "preprocessing", "serving", "trainer")


def configure_logging() -> None:
    """Our progress lines at INFO; Beam's and TensorFlow's chatter only from WARNING."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for package in OUR_PACKAGES:
        logging.getLogger(package).setLevel(logging.INFO)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
