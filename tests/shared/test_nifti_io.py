"""The bounded NIfTI reader refuses crafted headers before inflating voxels (issue 21)."""

import resource
import tracemalloc

import numpy as np
import pytest

from shared import nifti_io
from tests import hostile


def test_good_volume_round_trips_unchanged():
    array = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    data = nifti_io.nifti_bytes(array, np.eye(4))
    image = nifti_io.parse_nifti(data, "ok.nii.gz")
    np.testing.assert_array_equal(np.asarray(image.dataobj), array)
    raw = nifti_io.nifti_bytes(array, np.eye(4), compress=False)
    np.testing.assert_array_equal(np.asarray(nifti_io.parse_nifti(raw, "ok.nii").dataobj), array)


def test_1024_cube_in_2mb_refused_by_header_without_inflating():
    data = hostile.claims_cube(1024, fill_bytes=2 << 30 >> 10)  # header claims 2 GiB; the file is small
    tracemalloc.start()
    with pytest.raises(nifti_io.NiftiError, match=r"1024x1024x1024 int16.*over the per-volume ceiling of 512 MB"):
        nifti_io.parse_nifti(data, "flair.nii.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_768_cube_refused_and_ceiling_configurable(monkeypatch):
    data = hostile.claims_cube(768, fill_bytes=1 << 20)
    with pytest.raises(nifti_io.NiftiError, match="768x768x768"):
        nifti_io.read_header(data, "flair.nii.gz")
    monkeypatch.setenv(nifti_io.MAX_VOLUME_ENV, "4096")
    with pytest.raises(nifti_io.NiftiError, match="gzip stream of .* bytes cannot hold them"):
        nifti_io.read_header(data, "flair.nii.gz")  # past the ceiling, deflate's 1032:1 still refuses it


def test_real_brats_grids_pass_the_default_ceiling():
    for shape, dtype in (((240, 240, 155), np.float32), ((182, 218, 182), np.float64),
                         ((512, 512, 300), np.int16), ((512, 512, 512), np.float32)):
        head = hostile.header_bytes(shape, dtype)
        info = nifti_io.read_header(head + b"\x00" * (int(np.prod(shape)) * np.dtype(dtype).itemsize),
                                    "t1c.nii")
        assert info.shape == shape


@pytest.mark.parametrize("make, reason", [
    (hostile.negative_dims, r"dimensions \(8, -8, 8\); every one must be > 0"),
    (hostile.zero_dims, r"dimensions \(8, 0, 8\)"),
    (hostile.wrong_datatype, r"truncated: header declares .* float64.*datatype that does not match"),
    (hostile.bitpix_mismatch, "bitpix says 32"),
    (hostile.truncated_gzip, "truncated"),
])
def test_crafted_headers_refused_with_the_reason(make, reason):
    with pytest.raises(nifti_io.NiftiError, match=reason) as err:
        nifti_io.parse_nifti(make(), "t1.nii.gz")
    assert "t1.nii.gz" in str(err.value)


def test_unknown_datatype_and_non_nifti_refused():
    with pytest.raises(nifti_io.NiftiError, match="unknown NIfTI datatype code 999"):
        nifti_io.read_header(hostile.header_bytes((4, 4, 4), datatype=999) + b"\x00" * 128, "x.nii")
    with pytest.raises(nifti_io.NiftiError, match="not a NIfTI file"):
        nifti_io.read_header(b"DICM" + b"\x00" * 600, "x.nii")


def test_gzip_bomb_stops_at_the_declared_bytes():
    data = hostile.bomb((8, 8, 8), inflated_bytes=1 << 30)  # 1 GiB of zeros after a 1 KB volume
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    image = nifti_io.parse_nifti(data, "seg.nii.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.shape == (8, 8, 8)
    assert peak < 4 << 20, peak  # the old reader inflated the whole 1 GiB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10  # KiB: under 64 MB more
