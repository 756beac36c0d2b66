"""Web app: upload handling (real bytes), temporary folders, and the page through Streamlit's AppTest.

AppTest cannot upload files, so the upload path of the page is driven by
replacing ``st.file_uploader`` with one that returns real files; the browser
test (tests/test_app_browser.py, slow) uploads through the real widget.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import stat
import sys
import tempfile
import zipfile

import nibabel as nib
import numpy as np
import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from app import session, views
from app.uploads import MB, InputError, Upload, _write_inside, detect_modalities, prepare
from shared.nifti_io import nifti_bytes
from tests.helpers import ROOT, TINY_SHAPE

PAGE = str(ROOT / "app" / "streamlit_app.py")
CHANNELS = ("flair", "t1", "t1ce", "t2")
NAMES_2020 = {c: f"BraTS20_Training_007_{c}.nii.gz" for c in CHANNELS + ("seg",)}
NAMES_2023 = {c: f"BraTS-GLI-00012-000-{t}.nii.gz"
              for c, t in {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}.items()}


def _nifti(shape=(10, 12, 8), value=1, compress=True) -> bytes:
    return nifti_bytes(np.full(shape, value, dtype=np.int16), np.eye(4), compress=compress)


def _uploads(names: dict[str, str], shape=(10, 12, 8), **shapes) -> list[Upload]:
    return [Upload(name, _nifti(shapes.get(c, shape))) for c, name in names.items()]


def _zip(members: dict[str, bytes], links=()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# ----------------------------------------------------------------- modalities


@pytest.mark.parametrize("names, layout", [(NAMES_2020, "brats2020"), (NAMES_2023, "brats2023_gli")])
def test_modalities_and_segmentation_are_found_by_any_brats_naming(names, layout):
    patient = prepare(_uploads(names), CHANNELS)
    assert patient.layout == layout
    assert {c: u.name for c, u in patient.files.items()} == {c: names[c] for c in CHANNELS}
    assert patient.truth.name == names["seg"]
    assert patient.patient_id == names["flair"].rsplit("_" if layout == "brats2020" else "-", 1)[0]
    assert patient.shape == (10, 12, 8) and patient.ignored == []


def test_kaggle_nii_and_hand_renamed_files_are_recognised():
    names = [f"my scan_{c}.nii" for c in CHANNELS]
    layout, found, seg = detect_modalities(names, CHANNELS)
    assert layout == "brats2020" and found["t1"] == "my scan_t1.nii" and found["t1ce"] == "my scan_t1ce.nii"
    assert seg is None
    patient = prepare([Upload(n, _nifti(compress=False)) for n in names], CHANNELS)
    assert patient.patient_id == "my_scan"


def test_missing_modality_names_what_to_upload():
    names = dict(NAMES_2020)
    del names["t1ce"]
    with pytest.raises(InputError, match=r"missing modality t1ce: no file name ends in _t1ce\.nii\.gz") as err:
        prepare(_uploads(names), CHANNELS)
    assert "-t1c.nii.gz (brats2023_gli, " in str(err.value) and "_t1c.nii.gz (brats2024_men_rt)" in str(err.value) and "BraTS20_Training_007_flair.nii.gz" in str(err.value)


def test_two_patients_at_once_are_refused():
    uploads = _uploads(NAMES_2020) + [Upload("BraTS20_Training_008_flair.nii.gz", _nifti())]
    with pytest.raises(InputError, match="2 files for modality flair"):
        prepare(uploads, CHANNELS)


def test_a_model_with_three_channels_needs_only_those():
    names = {c: NAMES_2020[c] for c in ("flair", "t1ce", "t2")}
    patient = prepare(_uploads(names), ("flair", "t1ce", "t2"))
    assert sorted(patient.files) == ["flair", "t1ce", "t2"]


# ----------------------------------------------------------------- bad files


def test_a_file_that_is_not_nifti_is_named():
    uploads = _uploads(NAMES_2020) + [Upload("notes.txt", b"hello")]
    with pytest.raises(InputError, match="notes.txt is not a NIfTI file"):
        prepare(uploads, CHANNELS)
    uploads = _uploads(NAMES_2020)
    uploads[1] = Upload(uploads[1].name, b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(InputError, match="BraTS20_Training_007_t1.nii.gz is not a readable gzip file"):
        prepare(uploads, CHANNELS)
    uploads[1] = Upload("BraTS20_Training_007_t1.nii", b"<html>" + b"x" * 600)
    with pytest.raises(InputError, match="BraTS20_Training_007_t1.nii is not a NIfTI file"):
        prepare(uploads, CHANNELS)


def test_shapes_that_disagree_are_listed():
    with pytest.raises(InputError, match=r"shapes disagree \(flair 10x12x8, t1 10x12x8, t1ce 10x12x9"):
        prepare(_uploads(NAMES_2020, t1ce=(10, 12, 9)), CHANNELS)
    with pytest.raises(InputError, match=r"segmentation BraTS20_Training_007_seg.nii.gz is 9x12x8"):
        prepare(_uploads(NAMES_2020, seg=(9, 12, 8)), CHANNELS)


def test_uploads_over_the_size_limit_are_refused():
    big = [Upload(NAMES_2020["flair"], b"\0" * (MB + 1))]
    with pytest.raises(InputError, match=r"over this app's limit of 1 MB"):
        prepare(big, CHANNELS, limit_mb=1)
    with pytest.raises(InputError, match="Upload the patient's scans first"):
        prepare([], CHANNELS)


# ----------------------------------------------------------------- zips


def test_a_zip_of_the_patient_folder_is_unpacked_in_memory():
    members = {f"BraTS20_Training_007/{n}": _nifti() for n in NAMES_2020.values()}
    members.update({"BraTS20_Training_007/README.txt": b"x", "__MACOSX/._BraTS20_Training_007_t1.nii.gz": b"x"})
    patient = prepare([Upload("case.zip", _zip(members))], CHANNELS)
    assert patient.patient_id == "BraTS20_Training_007" and patient.truth is not None


@pytest.mark.parametrize("member", ["../evil_flair.nii.gz", "/etc/evil_flair.nii.gz", "a/../../evil.nii.gz",
                                    "C:/evil.nii.gz", "..\\evil.nii.gz"])
def test_zip_slip_refuses_the_whole_zip(member):
    members = {n: _nifti() for n in NAMES_2020.values()} | {member: _nifti()}
    with pytest.raises(InputError, match="refused: its member .* points outside the patient folder"):
        prepare([Upload("case.zip", _zip(members))], CHANNELS)


def test_links_in_a_zip_are_refused():
    members = {n: _nifti() for n in NAMES_2020.values()} | {"link_t2.nii.gz": b"/etc/passwd"}
    with pytest.raises(InputError, match="is a link"):
        prepare([Upload("case.zip", _zip(members, links={"link_t2.nii.gz"}))], CHANNELS)


def test_zip_bombs_and_broken_zips_are_refused():
    bomb = _zip({NAMES_2020["flair"]: b"\0" * (3 * MB)})
    assert len(bomb) < MB
    with pytest.raises(InputError, match="expands to more than this app's limit of 1 MB"):
        prepare([Upload("bomb.zip", bomb)], CHANNELS, limit_mb=1)
    with pytest.raises(InputError, match="broken.zip is not a readable zip file"):
        prepare([Upload("broken.zip", b"PK\x03\x04 not really")], CHANNELS)
    with pytest.raises(InputError, match="empty.zip holds no .nii or .nii.gz file"):
        prepare([Upload("empty.zip", _zip({"a.txt": b"x"}))], CHANNELS)


def test_files_are_written_only_inside_the_folder(tmp_path):
    path = _write_inside(str(tmp_path), "../../up/evil.nii.gz", b"x")
    assert os.path.dirname(path) == os.path.realpath(tmp_path) and os.path.basename(path) == "evil.nii.gz"
    with pytest.raises(InputError, match="refused"):
        _write_inside(str(tmp_path), "..", b"x")


# ----------------------------------------------------------------- settings, example, progress


def test_models_are_found_model_keras_first(tmp_path):
    for rel in ["b/model.keras", "b/checkpoints/best.keras", "a/model.keras", "a/other.keras"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    settings = session.parse_args(["--models_dir", str(tmp_path), "--max_upload_mb=50", "-q", "--unknown=1"])
    assert settings.max_upload_mb == 50
    found = [os.path.relpath(p, tmp_path) for p in session.find_models(settings)]
    assert found == ["a/model.keras", "b/model.keras", "a/other.keras", "b/checkpoints/best.keras"]
    settings = session.parse_args(["--model=x.keras"])
    assert session.find_models(settings) == ["x.keras"] and settings.models_dirs == []


def test_example_fits_the_model_crop():
    from configs.preprocess import default

    def cfg(**crop):
        return dict(default.get_config().to_dict(), crop=crop)

    assert session.example_shape(cfg(mode="centered", size=[32, 32, 32])) == session.EXAMPLE_SHAPE
    assert session.example_shape(cfg(mode="centered", size=[128, 128, 128])) == (128, 128, 128)
    assert session.example_shape(cfg(mode="fixed", box=[[48, 192], [48, 192], [5, 149]])) == (240, 240, 155)
    assert session.example_shape(cfg(mode="bbox", margin=8, multiple=16, min_size=[64, 64, 64])) == session.EXAMPLE_SHAPE


def test_progress_bar_moves_forward():
    steps = [("preprocess", 0.0), ("inference", 0.0), ("inference", 0.5), ("inference", 1.0), ("done", 1.0)]
    values = [session.progress_step(*s)[0] for s in steps]
    assert values == sorted(values) and values[-1] == 1.0 and all(0 <= v <= 1 for v in values)


# ----------------------------------------------------------------- segmentation (tiny model)


@pytest.fixture(scope="module")
def predictor(tiny_model):
    from serving import predictor as predictor_lib

    return predictor_lib.load_predictor(str(tiny_model))


def _cohort_uploads(tiny_cohort, pid="BraTS20_Training_002") -> list[Upload]:
    folder = tiny_cohort / pid
    return [Upload(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


def _app_temp_dirs(root) -> list[str]:
    return [n for n in os.listdir(root) if n.startswith("brats-app-")]


def test_segment_scores_against_the_truth_and_cleans_up(predictor, tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    patient = prepare(_cohort_uploads(tiny_cohort), predictor.channels)
    seen = []
    result = session.segment(predictor, patient, progress=lambda stage, f: seen.append(
        (stage, f, _app_temp_dirs(tmp_path))))
    assert seen[0][0] == "preprocess" and seen[-1][:2] == ("done", 1.0)
    assert all(len(dirs) == 1 for *_, dirs in seen)  # it existed while predicting ...
    assert _app_temp_dirs(tmp_path) == []  # ... and is gone now
    assert result.shape == TINY_SHAPE and sorted(result.images) == sorted(CHANNELS)
    assert result.scores is not None and 0 <= result.scores["dice_WT"] <= 1
    rows = views.volumes_table(result)
    assert [r["Region"] for r in rows][-2:] == ["WT = NCR + ED + ET", "TC = NCR + ET"] and set(rows[0]) == {
        "Region", "Volume (mL)", "True volume (mL)", "Dice", "HD95 (mm)"}
    assert result.summary_png[:8] == b"\x89PNG\r\n\x1a\n"
    written = nib.Nifti1Image.from_bytes(gzip.decompress(result.segmentation))
    source = nib.Nifti1Image.from_bytes(gzip.decompress(patient.files["flair"].data))
    assert written.shape == TINY_SHAPE and np.allclose(written.affine, source.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}  # BraTS 2020 numbering, as uploaded
    slices = views.view_images(result, "t1ce", views.default_centre(result), show=(2,), size=120)
    assert set(slices) == {"axial", "coronal", "sagittal"}
    assert all(v.dtype == np.uint8 and v.ndim == 3 and max(v.shape[:2]) == 120 for v in slices.values())


def test_a_corrupt_scan_fails_cleanly_and_leaves_nothing(predictor, tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uploads = [u for u in _cohort_uploads(tiny_cohort) if not u.name.endswith("_seg.nii.gz")]
    t2 = next(i for i, u in enumerate(uploads) if u.name.endswith("_t2.nii.gz"))
    good = prepare(uploads, predictor.channels)
    uploads[t2] = Upload(uploads[t2].name, uploads[t2].data[: len(uploads[t2].data) // 2])  # header intact
    with pytest.raises(InputError, match=r"_t2.nii.gz: truncated"):  # issue 21: refused as it is uploaded
        prepare(uploads, predictor.channels)
    # past the upload check (a file changed on the way), the segmentation still fails cleanly
    patient = dataclasses.replace(good, files=dict(good.files, t2=uploads[t2]))
    with pytest.raises(InputError, match=r"Cannot segment BraTS20_Training_002: load: .*_t2.nii.gz") as err:
        session.segment(predictor, patient)
    assert str(tmp_path) not in str(err.value) and "brats-app-" not in str(err.value)
    assert _app_temp_dirs(tmp_path) == []


def test_a_truth_with_foreign_labels_is_refused(predictor, tiny_cohort, monkeypatch):
    uploads = [u for u in _cohort_uploads(tiny_cohort) if not u.name.endswith("_seg.nii.gz")]
    truth = Upload("truth.nii.gz", nifti_bytes(np.full(TINY_SHAPE, 7, np.uint8), np.eye(4)))
    patient = prepare(uploads, predictor.channels, truth=truth)
    with pytest.raises(InputError, match=r"truth.nii.gz has label values \[7\] that BraTS 2020"):
        session.segment(predictor, patient)


# ----------------------------------------------------------------- GLI 2024: five classes, RC is label 4


class _Truthful:
    """A stand-in network that answers with the one-hot truth of the case on the crop grid.

    It produces every class of the challenge, so a label map that confused RC
    (label 4) with enhancing tumour (3) would show in the written file and in
    the scores.
    """

    def __init__(self, classes: np.ndarray, num_classes: int, channels: int):
        self.onehot = np.eye(num_classes, dtype=np.float32)[classes][None]
        self.input_shape = (None, None, None, None, channels)

    def __call__(self, batch):
        assert batch.shape[1:4] == self.onehot.shape[1:4], "the stub answers whole crops only"
        return np.repeat(self.onehot, batch.shape[0], axis=0)


@pytest.fixture
def gli2024_predictor(tmp_path):
    """A GLI 2024 'model' (the truthful stub) with the GLI 2024 preprocessing of the example case."""
    from configs.preprocess import challenge as challenge_config
    from preprocessing.discovery import PatientSource
    from preprocessing.patient import preprocess
    from serving import predictor as predictor_lib

    cfg = challenge_config.get_config("brats2024_gli").to_dict()
    cfg.update(n4=dict(cfg["n4"], enabled=False), min_brain_voxels=200,
               crop={"mode": "centered", "size": (64, 64, 64), "box": cfg["crop"]["box"]})
    shape = session.example_shape(cfg)
    folder = tmp_path / "case"
    folder.mkdir()
    files = {}
    for upload in session.example_uploads(shape, "brats2024_gli"):
        (folder / upload.name).write_bytes(upload.data)
        channel = next(c for c in ("flair", "t1", "t1ce", "t2", "seg")
                       if upload.name.endswith(f"-{dict(flair='t2f', t1='t1n', t1ce='t1c', t2='t2w', seg='seg')[c]}.nii.gz"))
        files[channel] = str(folder / upload.name)
    record = preprocess(PatientSource(session.EXAMPLE_ID, "HGG", files, {}), cfg).record
    stub = _Truthful(np.argmax(record.mask, axis=-1), 5, 4)

    class StubPredictor(predictor_lib.Predictor):
        def predict_fn(self):
            return stub

    return StubPredictor(stub, "gli2024-stub.keras", cfg, (64, 64, 64), "stub-version", None)


def test_gli_2024_example_shows_and_scores_rc_as_rc(gli2024_predictor):
    predictor = gli2024_predictor
    uploads = session.example_uploads(session.example_shape(predictor.preprocess_cfg), "brats2024_gli")
    patient = prepare(list(uploads), predictor.channels, model=predictor.challenge)
    assert patient.layout == "brats2024_gli"  # GLI 2023 names files alike: the model's challenge decides
    result = session.segment(predictor, patient)
    written = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(result.segmentation)).dataobj)
    truth = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(patient.truth.data)).dataobj)
    assert sorted(np.unique(written).tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(written, truth)  # every label written back with its own value
    assert result.scores["dice_RC"] == 1.0 and result.scores["volume_truth_RC_ml"] > 0
    assert result.scores["dice_ET"] == 1.0
    rows = {r["Region"]: r for r in views.volumes_table(result)}
    assert rows["Resection cavity (RC)"]["Dice"] == 1.0 and "WT = NETC + SNFH + ET" in rows
    assert "Resection cavity (RC)" in views.legend_html(predictor.challenge)
    lesion_rows = {r["Region"]: r for r in views.lesion_rows(result)}
    assert set(lesion_rows) == {"WT", "TC", "ET", "NETC", "SNFH", "RC"}
    assert lesion_rows["RC"]["Lesion Dice"] == 1.0 and lesion_rows["RC"]["FP"] == 0
    assert views.class_titles(predictor.challenge)[4] == "Resection cavity (RC)"


def test_files_of_another_numbering_are_refused(gli2024_predictor):
    """A 2020-named case cannot go to a GLI 2024 model: its label 4 means enhancing tumour there."""
    with pytest.raises(InputError, match="BraTS 2020 .* trained on BraTS 2024/2025 GLI"):
        prepare(_uploads(NAMES_2020), CHANNELS, model=gli2024_predictor.challenge)
    with pytest.raises(InputError, match="not named as BraTS 2024/2025 GLI"):
        prepare(_uploads(NAMES_2020), CHANNELS, model=gli2024_predictor.challenge, pick="brats2024_gli")


def test_a_gli_2024_truth_is_never_read_as_2020_numbering(predictor, tiny_cohort):
    """A 2020 model's classes cannot score a truth holding labels 2020 does not define (no fallback)."""
    uploads = [u for u in _cohort_uploads(tiny_cohort) if not u.name.endswith("_seg.nii.gz")]
    seg = np.zeros(TINY_SHAPE, np.uint8)
    seg[10:14, 10:14, 10:14] = 3  # ET in 2023 numbering, undefined in 2020's
    patient = prepare(uploads, predictor.channels, truth=Upload("t.nii.gz", nifti_bytes(seg, np.eye(4))),
                            model=predictor.challenge)
    with pytest.raises(InputError, match=r"label values \[3\]"):
        session.segment(predictor, patient)


# ----------------------------------------------------------------- the page (AppTest)


def _page(monkeypatch, *args) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", *args])
    return AppTest.from_file(PAGE, default_timeout=120)


class _File:
    """What st.file_uploader returns: a name and getvalue()."""

    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def _fake_uploader(monkeypatch, scans: list[Upload]):
    def uploader(label, type=None, accept_multiple_files=False, key=None, **kwargs):
        return [_File(u.name, u.data) for u in scans] if key == "scans" else None

    monkeypatch.setattr(streamlit, "file_uploader", uploader)


def test_page_segments_the_example_and_keeps_the_result_on_slider_moves(tiny_model, monkeypatch):
    at = _page(monkeypatch, f"--model={tiny_model}")
    at.run()
    assert not at.exception and not at.error
    at.radio(key="mode").set_value("Example case (synthetic)").run()
    calls = []
    real_segment = session.segment
    monkeypatch.setattr(session, "segment", lambda *a, **k: calls.append(1) or real_segment(*a, **k))
    at.button(key="segment").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    result = at.session_state["result"]
    # the example comes on the grid the model's training scans were on (another grid would be refused)
    assert result.patient_id == session.EXAMPLE_ID and result.shape == TINY_SHAPE
    table = at.table[0].value
    assert list(table.columns) == ["Volume (mL)", "True volume (mL)", "Dice", "HD95 (mm)"] and len(table) == 5
    assert len([e for e in at.main if type(e).__name__ == "Image"]) == 3  # axial, coronal, sagittal
    assert len(at.get("download_button")) == 2

    axial = next(s for s in at.slider if s.key.startswith("axial-"))
    at.slider(key=axial.key).set_value(5).run()
    at.checkbox(key=f"show-2-{result.token}").uncheck().run()
    at.selectbox(key=f"modality-{result.token}").set_value("t2").run()
    assert not at.exception and calls == [1]
    assert at.session_state["result"] is result and at.slider(key=axial.key).value == 5


def test_page_reports_bad_uploads_with_an_error(tiny_model, monkeypatch):
    at = _page(monkeypatch, f"--model={tiny_model}")
    at.run()
    at.button(key="segment").click().run()
    assert "Upload the patient's scans first" in at.error[0].value

    _fake_uploader(monkeypatch, _uploads(NAMES_2020)[:3] + [Upload("scan.dcm", b"DICM")])
    at.button(key="segment").click().run()
    assert not at.exception and "scan.dcm is not a NIfTI file" in at.error[0].value

    _fake_uploader(monkeypatch, _uploads(NAMES_2020, t2=(10, 12, 9)))
    at.button(key="segment").click().run()
    assert "shapes disagree" in at.error[0].value and "result" not in at.session_state

    _fake_uploader(monkeypatch, [Upload("case.zip", b"\0" * (MB + 1))])
    at = _page(monkeypatch, f"--model={tiny_model}", "--max_upload_mb=1")
    at.run()
    at.button(key="segment").click().run()
    assert not at.exception and "over this app's limit of 1 MB" in at.error[0].value


def test_page_promises_no_more_than_the_server_accepts(tiny_model, monkeypatch):
    at = _page(monkeypatch, f"--model={tiny_model}", "--max_upload_mb=600")
    at.run()  # Streamlit's default server.maxUploadSize is 200 MB
    assert any("At most 200 MB in all" in c.value for c in at.caption)


def test_page_segments_uploaded_files(tiny_model, tiny_cohort, monkeypatch):
    _fake_uploader(monkeypatch, _cohort_uploads(tiny_cohort, "BraTS20_Training_003"))
    at = _page(monkeypatch, f"--model={tiny_model}", "--max_upload_mb=5")
    at.run()
    at.button(key="segment").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["result"].patient_id == "BraTS20_Training_003"
    assert "Dice" in at.table[0].value.columns


def test_page_without_a_usable_model_says_why(tmp_path, monkeypatch):
    at = _page(monkeypatch, f"--model={tmp_path / 'missing.keras'}")
    at.run()
    assert not at.exception
    assert "does not exist" in at.sidebar.error[0].value and at.button(key="segment").disabled
    at = _page(monkeypatch, f"--models_dir={tmp_path}")
    at.run()
    assert "No trained model found" in at.sidebar.error[0].value
