"""The web page: upload a patient's MRI (or take the example), segment it, browse and download.

    streamlit run app/streamlit_app.py -- --model=demo_data/runs/tiny/model.keras
    streamlit run app/streamlit_app.py --server.maxUploadSize=500 -- --models_dir=runs --max_upload_mb=500

Arguments after ``--`` (see :func:`app.session.parse_args`): ``--model`` (one
model; repeatable), ``--models_dir`` (every ``*.keras`` below it; default
``runs/`` and ``demo_data/runs/``), ``--max_upload_mb`` (default 500, capped
by Streamlit's own ``--server.maxUploadSize``, default 200) and
``--data_dir``.  The page only lays widgets out and wires the modules that
do the work, each testable without a browser: :mod:`app.uploads` (checking
the uploaded files), :mod:`app.session` (the cached model, the example, the
segmentation) and :mod:`app.views` (the pictures, tables and text it shows).
"""

from __future__ import annotations

import pathlib
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import session, uploads, views  # noqa: E402
from shared import nifti_io  # noqa: E402

UPLOAD, EXAMPLE = "Upload scans", "Example case (synthetic)"
TTA = {"none": "none (fastest)", "axes": "mirror each axis (4 passes)", "all": "all mirrors (8 passes)"}


def choose_inference(path: str) -> tuple[str, str]:
    """Sidebar: sliding window and TTA, preselected to what the model's run measured best."""
    window, tta, why = views.inference_defaults(path)
    # keyed by model, so picking another model preselects that model's own best
    window = st.sidebar.selectbox("Sliding window", list(views.WINDOWS), index=list(views.WINDOWS).index(window)
                                  if window in views.WINDOWS else 0, format_func=views.WINDOWS.get,
                                  key=f"window-{path}")
    tta = st.sidebar.selectbox("Test-time augmentation", list(TTA), index=list(TTA).index(tta) if tta in TTA else 0,
                               format_func=TTA.get, key=f"tta-{path}")
    st.sidebar.caption(why)
    return window, tta


def choose_model(settings: session.Settings):
    """Sidebar: the model, window and TTA; returns (predictor or None, tta)."""
    st.sidebar.header("Model")
    models = session.find_models(settings)
    if not models:
        where = ", ".join(settings.models_dirs) or "(no folder)"
        st.sidebar.error(f"No trained model found in {where}. Train one (`make demo`) or start the app with "
                         "`-- --model=path/to/model.keras` or `-- --models_dir=runs`.")
        return None, "none"
    path = st.sidebar.selectbox("Trained model", models, key="model", format_func=views.short_model_name,
                                help="The full path is written under the selection.")
    st.sidebar.caption(f"`{path}`")
    window, tta = choose_inference(path)
    from serving import predictor as predictor_lib

    try:
        predictor = predictor_lib.with_window(session.load_predictor(path, settings.data_dir), window)
    except Exception as exc:  # ModelError says why; anything else must not take the page down
        st.sidebar.error(f"Cannot use this model: {exc}")
        return None, tta
    st.sidebar.caption(views.model_summary(predictor))
    return predictor, tta


def choose_challenge(predictor) -> str | None:
    """Sidebar: which challenge the uploads follow (naming and label numbering); None detects it."""
    from shared import challenges

    options = ["detect"] + list(challenges.CHALLENGES)
    pick = st.sidebar.selectbox(
        "Challenge of the uploads", options, index=0,
        format_func=lambda n: "detect from the file names" if n == "detect" else challenges.get(n).title,
        help="Decides the file naming and what each label value means (label 4 is enhancing tumour in "
             "2020/2021, resection cavity in GLI 2024, oedema in PED 2024). Detection reads the file names; GLI "
             "2023 and 2024 share names, so the segmentation's labels decide (or the model's own challenge, "
             "said on the page). Files of a challenge whose labels differ from the model's are refused.",
        key="challenge")
    return None if pick == "detect" else pick


def collect_inputs(settings: session.Settings, predictor):
    """Upload widgets or the example; returns a function giving the uploads and optional truth."""
    mode = st.radio("Patient", [UPLOAD, EXAMPLE], horizontal=True, key="mode")
    if mode == EXAMPLE:
        compare = st.checkbox("Compare with the example's true segmentation (Dice, HD95)", value=True, key="compare")
        name = predictor.challenge.name if predictor is not None else "brats2020"
        st.caption(f"A synthetic patient ({session.EXAMPLE_ID}) in the naming and labels of the model's challenge, "
                   "made on the fly with the project's synthetic-data generator, with its true segmentation. "
                   "Its Dice depends on the sliding window: the demo's tiny model (trained for minutes on 32³ "
                   "patches) scores far better with the whole crop, which its run records as best and the "
                   "sidebar preselects.")

        def example():
            expected = predictor.expected if predictor else None  # the training scans' grid, where recorded
            shape = session.example_shape(predictor.preprocess_cfg if predictor else {}, expected)
            made = session.example_uploads(shape, name, session.example_spacing(expected))
            return [u for u in made if compare or not uploads.is_segmentation_name(u.name, name)], None

        return example
    scans = st.file_uploader(
        "The patient's modalities (.nii or .nii.gz, any BraTS naming: *_flair, *_t1, *_t1ce, *_t2 or "
        "*-t2f, *-t1n, *-t1c, *-t2w, MEN-RT *_t1c), or one zip of the patient folder. Scans must be "
        "skull-stripped and on the model's grid (see the sidebar).",
        accept_multiple_files=True, max_upload_size=settings.max_upload_mb, key="scans")
    truth = st.file_uploader("Optional: a segmentation to compare with (Dice, HD95)",
                             max_upload_size=settings.max_upload_mb, key="truth")
    st.caption(views.upload_limit_text(settings.max_upload_mb,
                                       nifti_io.max_volume_bytes(settings.max_volume_mb) // nifti_io.MB))
    for f in list(scans or []) + ([truth] if truth is not None else []):  # each file as it arrives, header first
        problem = uploads.check_upload(uploads.Upload(f.name, f.getvalue()), settings.max_volume_mb)
        if problem:
            st.error(problem)

    def uploaded():
        files = [uploads.Upload(f.name, f.getvalue()) for f in scans or []]
        return files, (uploads.Upload(truth.name, truth.getvalue()) if truth is not None else None)

    return uploaded


def run_segmentation(settings: session.Settings, predictor, tta: str, get_inputs, pick: str | None = None) -> None:
    """Check the inputs, segment with a progress bar, keep the result (or the error) in session_state."""
    st.session_state.pop("result", None)
    st.session_state.pop("error", None)
    bar = st.progress(0.0, text="Checking the files...")
    try:
        files, truth = get_inputs()
        patient = uploads.prepare(files, predictor.channels, settings.max_upload_mb, truth,
                                  model=predictor.challenge, pick=pick, volume_mb=settings.max_volume_mb)

        def report(stage: str, fraction: float) -> None:
            value, text = session.progress_step(stage, fraction)
            bar.progress(value, text=text)

        st.session_state["result"] = session.segment(predictor, patient, tta, progress=report)
    except uploads.InputError as exc:
        st.session_state["error"] = str(exc)
    except Exception as exc:  # never show a traceback page; the server log keeps it
        traceback.print_exc()
        st.session_state["error"] = f"The segmentation failed unexpectedly: {type(exc).__name__}: {exc}"
    bar.empty()


def show_viewer(result: session.Result) -> None:
    """Slices with overlay, legend, volumes table and downloads of one result."""
    pred = result.prediction
    st.subheader(f"Segmentation of {result.patient_id}")
    st.caption(f"Model {result.model_path}; preprocessing {pred.seconds['preprocess']:.1f} s, inference "
               f"{pred.seconds['inference']:.1f} s; grid {'x'.join(map(str, result.shape))}, voxels "
               f"{' x '.join(f'{s:g}' for s in pred.spacing)} mm.")
    for warning in result.warnings:
        st.warning(warning)
    for note in result.notes:
        st.info(note)
    key = result.token
    controls = st.columns([2, 4, 2])
    modality = controls[0].selectbox("Scan underneath", list(result.images),
                                     format_func=lambda m: views.MODALITY_TITLES.get(m, m), key=f"modality-{key}")
    with controls[1]:
        st.markdown("Regions shown")
        titles = views.class_titles(pred.challenge)
        toggles = st.columns(min(len(titles), 3))  # at most three a row: longer names are not cut
        show = [cls for n, (cls, title) in enumerate(titles.items())
                if toggles[n % len(toggles)].checkbox(title, value=True, key=f"show-{cls}-{key}")]
    alpha = controls[2].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key=f"alpha-{key}")

    from serving.pictures import VIEWS

    centre = list(views.default_centre(result))
    columns = dict(zip(VIEWS, st.columns(3)))
    for view, (fixed, _, _) in VIEWS.items():
        centre[fixed] = columns[view].slider(f"{view.capitalize()} slice", 0, result.shape[fixed] - 1,
                                             centre[fixed], key=f"{view}-{key}")
    images = views.view_images(result, modality, centre, show, alpha)
    for view, image in images.items():
        columns[view].image(image, caption=f"{view} {centre[VIEWS[view][0]]}", width="stretch")
    st.markdown(views.legend_html(pred.challenge, show), unsafe_allow_html=True)
    st.caption("Radiological convention: the patient's right is on the image's left.")

    against = ("the example's true segmentation" if result.patient_id == session.EXAMPLE_ID
               else "the uploaded segmentation")
    st.markdown("**Tumour volumes**" + (f" and scores against {against}" if result.scores else ""))
    table = pd.DataFrame(views.volumes_table(result)).set_index("Region")
    st.table(table.style.format({c: "{:.3f}" if c == "Dice" else "{:.2f}" for c in table.columns}))
    if result.scores is not None:
        from shared.metrics import CONVENTION

        st.caption(CONVENTION)
    lesion_rows = views.lesion_rows(result)
    if lesion_rows:  # challenges ranked lesion-wise (2023 on); BraTS 2020/2021 have whole-region scores only
        st.markdown("**Lesion-wise scores** (as the BraTS leaderboards rank)")
        st.table(pd.DataFrame(lesion_rows).set_index("Region"))
        st.caption(result.lesions["convention"])
    left, right = st.columns(2)
    left.download_button("Download the segmentation (NIfTI, original geometry)", result.segmentation,
                         file_name=f"{result.patient_id}_segmentation.nii.gz", mime="application/gzip",
                         on_click="ignore", key=f"nifti-{key}")
    right.download_button("Download the summary picture (PNG)", result.summary_png,
                          file_name=f"{result.patient_id}_summary.png", mime="image/png",
                          on_click="ignore", key=f"png-{key}")


def main() -> None:
    st.set_page_config(page_title="BraTS tumour segmentation", layout="wide")
    settings = session.parse_args(sys.argv[1:])
    # The server refuses any file over server.maxUploadSize (default 200 MB): never promise more.
    settings.max_upload_mb = min(settings.max_upload_mb, int(st.get_option("server.maxUploadSize")))
    st.title("Brain tumour segmentation")
    st.markdown("Upload one patient's MRI (skull-stripped, on the grid the sidebar states for the model) and a 3D "
                "U-Net trained on a BraTS challenge outlines the tumour sub-regions that challenge labels. "
                "For research only, not for diagnosis.")
    predictor, tta = choose_model(settings)
    pick = choose_challenge(predictor)
    get_inputs = collect_inputs(settings, predictor)
    if st.button("Segment", type="primary", key="segment", disabled=predictor is None):
        run_segmentation(settings, predictor, tta, get_inputs, pick)
    if "error" in st.session_state:
        st.error(st.session_state["error"])
    if "result" in st.session_state:
        show_viewer(st.session_state["result"])


main()
