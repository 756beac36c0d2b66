"""Hostile and mislabelled uploads (issue 21): refused header-first with a message, challenge never guessed."""

import tracemalloc

import numpy as np
import pytest

from app.uploads import InputError, Upload, check_upload, prepare
from shared import challenges
from shared.nifti_io import nifti_bytes
from tests import hostile

CHANNELS = ("flair", "t1", "t1ce", "t2")
TOKENS = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}


def _modern(cohort: str, seg_values=None, shape=(10, 12, 8)) -> list[Upload]:
    pid = f"BraTS-{cohort}-00012-000"
    files = [Upload(f"{pid}-{TOKENS[c]}.nii.gz", nifti_bytes(np.ones(shape, np.int16), np.eye(4))) for c in CHANNELS]
    if seg_values is not None:
        seg = np.zeros(shape, np.uint8)
        seg.flat[: len(seg_values)] = seg_values
        files.append(Upload(f"{pid}-seg.nii.gz", nifti_bytes(seg, np.eye(4))))
    return files


def _with(files, index, data):
    files = list(files)
    files[index] = Upload(files[index].name, data)
    return files


def test_a_1024_cube_claimed_in_2mb_is_refused_at_upload_without_inflating():
    data = hostile.claims_cube(1024, fill_bytes=2 << 30 >> 10)
    tracemalloc.start()
    message = check_upload(Upload("BraTS-GLI-00012-000-t2f.nii.gz", data))
    with pytest.raises(InputError, match="over the per-volume ceiling"):
        prepare(_with(_modern("GLI"), 0, data), CHANNELS, model=challenges.get("brats2023_gli"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "1024x1024x1024 int16" in message and "BraTS-GLI-00012-000-t2f.nii.gz" in message
    assert peak < 16 << 20, peak


@pytest.mark.parametrize("make, words", [
    (hostile.negative_dims, "must be > 0"), (hostile.zero_dims, "must be > 0"),
    (lambda: hostile.wrong_datatype((10, 12, 8)), "float64"), (lambda: hostile.truncated_gzip((10, 12, 8)), "truncated"),
])
def test_crafted_headers_are_a_message_naming_the_file(make, words):
    with pytest.raises(InputError, match=words) as err:
        prepare(_with(_modern("GLI"), 1, make()), CHANNELS, model=challenges.get("brats2023_gli"))
    assert "BraTS-GLI-00012-000-t1n.nii.gz" in str(err.value)


def test_a_gzip_bomb_segmentation_is_read_only_to_its_declared_bytes():
    files = _modern("GLI")
    seg = nifti_bytes(np.full((10, 12, 8), 4, np.uint8), np.eye(4), compress=False)
    files.append(Upload("BraTS-GLI-00012-000-seg.nii.gz", hostile.bomb(volume=seg, inflated_bytes=256 << 20)))
    patient = prepare(files, CHANNELS, model=challenges.get("brats2024_gli"))
    assert patient.layout == "brats2024_gli" and "labels" in patient.challenge_note


def test_a_ped_upload_to_a_gli_model_is_refused_with_both_numberings():
    with pytest.raises(InputError) as err:
        prepare(_modern("PED"), CHANNELS, model=challenges.get("brats2023_gli"))
    message = str(err.value)
    assert "BraTS 2024 PED" in message and "1 ET, 2 NETC, 3 CC, 4 ED" in message
    assert "BraTS 2023 GLI" in message and "1 NETC, 2 SNFH, 3 ET" in message


def test_gli_2023_and_2024_are_told_apart_by_the_segmentation_labels():
    with pytest.raises(InputError, match=r"BraTS 2024/2025 GLI.*1 NETC, 2 SNFH, 3 ET, 4 RC.*BraTS 2023 GLI"):
        prepare(_modern("GLI", [1, 2, 4]), CHANNELS, model=challenges.get("brats2023_gli"))
    assert prepare(_modern("GLI", [1, 2, 3]), CHANNELS, model=challenges.get("brats2023_gli")).layout == "brats2023_gli"
    patient = prepare(_modern("GLI", [1, 4]), CHANNELS, model=challenges.get("brats2024_gli"))
    assert patient.layout == "brats2024_gli" and "from the file names and the labels" in patient.challenge_note


def test_without_a_segmentation_the_page_says_which_challenge_or_asks():
    patient = prepare(_modern("GLI"), CHANNELS, model=challenges.get("brats2024_gli"))
    assert "the model's own" in patient.challenge_note and "BraTS 2023 GLI" in patient.challenge_note
    with pytest.raises(InputError, match="pick the challenge in the sidebar"):
        prepare(_modern("GLI"), CHANNELS, model=None)
    assert "detected from the file names" in prepare(_modern("SSA"), CHANNELS).challenge_note


# ----------------------------------------------------------------- the page (AppTest)


def test_page_refuses_a_crafted_upload_as_it_arrives_and_keeps_serving(tiny_model, monkeypatch):
    from tests.app.test_app import NAMES_2020, _fake_uploader, _page, _uploads

    files = _uploads(NAMES_2020)
    files[0] = Upload(files[0].name, hostile.claims_cube(1024, fill_bytes=2 << 20))
    _fake_uploader(monkeypatch, files)
    at = _page(monkeypatch, f"--model={tiny_model}")
    at.run()  # before Segment: the file is refused as it arrives, header first
    assert not at.exception and any("1024x1024x1024" in e.value for e in at.error)
    at.button(key="segment").click().run()
    assert not at.exception and "over the per-volume ceiling" in at.error[-1].value
    at.radio(key="mode").set_value("Example case (synthetic)").run()  # the same server goes on
    at.button(key="segment").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    result = at.session_state["result"]
    assert any(note.startswith("Challenge: BraTS 2020") for note in result.notes)
    assert any("scores against the example's true segmentation" in m.value for m in at.markdown)


def test_page_refuses_a_ped_upload_to_a_2020_model_naming_both_numberings(tiny_model, monkeypatch):
    from tests.app.test_app import _fake_uploader, _page

    _fake_uploader(monkeypatch, _modern("PED"))
    at = _page(monkeypatch, f"--model={tiny_model}")
    at.run()
    at.button(key="segment").click().run()
    assert not at.exception
    message = at.error[-1].value
    assert "1 ET, 2 NETC, 3 CC, 4 ED" in message and "1 NCR, 2 ED, 4 ET" in message
