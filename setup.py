"""Package for local installs and for Dataflow workers (``--setup_file ./setup.py``).

Dataflow installs ``install_requires`` on every worker; antspyx ships
manylinux wheels, so no compiler is needed there.  For faster worker start,
build the SDK container in ``Dockerfile`` instead (see BUILD_NOTES.md).
Everything the Beam jobs import must be listed here: tests/test_packaging.py
checks it against their imports.
"""

import setuptools

setuptools.setup(
    name="brats-unet-engine",
    version="0.1.0",
    description="BraTS preprocessing-to-TFRecord data engine (Apache Beam) and 3D U-Net trainer",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["preprocessing*", "beam_pipeline*", "trainer*", "serving*", "evaluation*", "synthetic*", "shared*", "configs*"]),
    install_requires=[
        "apache-beam>=2.77,<2.78",
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",  # imported directly (trainer, serving), not only through tensorflow
        "antspyx>=0.6.3,<0.7",
        "nibabel>=5.4,<6",
        "numpy>=2.0,<2.4",
        "scipy>=1.13,<1.16",
        "scikit-learn>=1.9,<2",
        "threadpoolctl>=3,<4",  # preprocessing.n4 (also a scikit-learn dependency)
        "absl-py>=2,<3",
        "ml-collections>=1.1,<2",
        "protobuf>=6.31.1,<7",
        "matplotlib>=3.11,<4",  # the pictures predict --beam writes on its workers
        "pillow>=12,<13",
        "google-crc32c>=1.5,<2",  # TFRecord framing in shared/tfrecord.py (the workers import no TensorFlow)
    ],
    extras_require={
        "gcp": ["apache-beam[gcp]>=2.77,<2.78", "build>=1.2"],  # build: the sdist Beam stages for --setup_file
        "dask": ["dask[distributed]>=2024.4.2", "dask-jobqueue"],
        "test": ["pytest>=8"],
    },
)
