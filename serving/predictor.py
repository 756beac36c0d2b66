"""A trained model (or an ensemble) with everything its predictions must repeat, read from its run folder(s).

What a model's inputs must look like comes from its run (:mod:`shared.trained_run`):
the preprocessing of the dataset it learnt from (the manifest's, or the
lineage's copies), the training scans' geometry, the training patch (the
default sliding window), the recorded window/TTA choice and, for a
cross-validation workdir, the post-processing chosen on its folds.  This
module turns ``--model`` values into that :class:`Predictor`; running it on a
patient is :mod:`serving.prediction`'s job.
"""

from __future__ import annotations

import collections
import dataclasses
import posixpath

from shared import challenges, geometry, storage, trained_run
from shared.spec import PreprocessingSpec
from shared.trained_run import RecordedInference, TrainedRun
from serving import inference, models as models_lib
from serving.models import ModelError


@dataclasses.dataclass
class Predictor:
    """A trained model (or an ensemble of models) with everything needed to repeat its data's preprocessing."""

    model: object  # the first (or only) model
    model_path: str  # the model file, or for an ensemble what was asked for (a cross-validation workdir, ...)
    preprocess_cfg: dict
    window: tuple[int, int, int]  # sliding-window size
    version_id: str
    data_dir: str | None  # the dataset version read for the config (None: the lineage's copy)
    models: tuple = ()  # every member of an ensemble (empty: ``model`` alone)
    model_paths: tuple[str, ...] = ()  # their files
    postprocessing: tuple[dict, ...] = ()  # shared.postprocessing rules applied to the classes
    postprocessing_path: str | None = None  # where they were read from
    geometry: dict | None = None  # the training scans' geometry, as the dataset's manifest records it
    runs: tuple[TrainedRun | None, ...] = ()  # each member's run (None: a model file without a run folder)

    # Derived once, when the predictor is made (and again by dataclasses.replace): the per-patient code
    # reads plain attributes and never calls back into this module.
    channels: tuple[str, ...] = dataclasses.field(init=False)  # the model's input channels, in order
    layout: str = dataclasses.field(init=False)  # the challenge its data was preprocessed for
    challenge: challenges.Challenge = dataclasses.field(init=False)  # what the model's classes mean
    expected: geometry.Expected = dataclasses.field(init=False)  # what a scan must look like for this model
    decoding: object = dataclasses.field(init=False)  # None (argmax) or a region model's decoding
    provenance: dict = dataclasses.field(init=False)  # what the JSON beside a segmentation says of the model(s)

    def __post_init__(self):
        self.channels = tuple(self.preprocess_cfg["modalities"])
        self.layout = self.preprocess_cfg["layout"]
        self.challenge = challenges.get(self.layout)
        self.expected = geometry.Expected.from_entry(self.geometry, self.preprocess_cfg)
        self.decoding = models_lib.region_decoding(self.model, self.challenge)
        self.provenance = self._provenance()

    @property
    def members(self) -> tuple:
        return tuple(self.models) or (self.model,)

    @property
    def patch_size(self) -> tuple[int, int, int] | None:
        """The first member's training patch (the default window), None when its run does not record it."""
        run = self.runs[0] if self.runs else None
        return run.patch_size if run else None

    def predict_fn(self):
        """Softmax of the model, or the mean softmax of an ensemble's members."""
        return inference.mean_predict_fn([inference.keras_predict_fn(m) for m in self.members])

    def _provenance(self) -> dict:
        about = {"model": self.model_path, "dataset_version_id": self.version_id}
        if len(self.model_paths) > 1:
            about["ensemble"] = list(self.model_paths)
        if self.postprocessing:
            about["postprocessing"] = list(self.postprocessing)
            about["postprocessing_file"] = self.postprocessing_path
        return about


#: The ``volume`` window where records differ in shape (crop mode bbox): each record's own whole shape
#: (``inference.sliding_window`` reads a None size from the image).
WHOLE_RECORD = (None, None, None)


def window_size(window, patch_size, cfg: dict) -> tuple[int, int, int] | tuple[None, None, None]:
    """The sliding window: ``None`` the training patch, ``"volume"`` the whole crop, or X,Y,Z.

    The training patch (``patch_size``, the run's; None: not recorded, the
    crop) is nnU-Net's choice (the network sees what it was trained on);
    ``volume`` repeats the trainer's own validation, which runs on whole
    cropped volumes and, for a small patch, sees more context.  Where
    records differ in shape (crop mode bbox) the whole crop is
    :data:`WHOLE_RECORD`: each record's own shape.
    """
    crop = PreprocessingSpec.from_config(cfg).crop_shape if window in (None, "", "patch", "volume") else None
    if window in (None, "", "patch"):
        window = patch_size or crop or WHOLE_RECORD
    elif window == "volume":
        window = crop or WHOLE_RECORD
    elif isinstance(window, str):  # X,Y,Z, or XxYxZ as choose_inference and the reports print sizes
        window = window.replace("x", ",").split(",")
    if tuple(window) == WHOLE_RECORD:
        return WHOLE_RECORD
    try:
        size = tuple(int(w) for w in window)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ModelError(f"window {window!r} is not 'patch', 'volume' or three positive sizes X,Y,Z "
                         "(or XxYxZ)")
    return size


def window_text(size) -> str:
    """``128x128x128``, or ``whole record`` for :data:`WHOLE_RECORD`, for people."""
    return "whole record" if None in tuple(size) else "x".join(map(str, size))


DEFAULT_WINDOW, DEFAULT_TTA = "patch", "none"


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """The sliding window and TTA a prediction runs with, and why (shown to the user)."""

    window: str  # "patch", "volume" or "X,Y,Z"
    tta: str
    source: str  # "asked", "recorded <path>" or "default"


def _run_of(model_path: str) -> TrainedRun | None:
    try:
        return trained_run.run_of_model(model_path)
    except trained_run.RunError as exc:
        raise ModelError(str(exc)) from None


def recorded_inference(model_path) -> RecordedInference | None:
    """The run's recorded best window and TTA (``inference.json``), for a single model; None otherwise.

    An ensemble has no one run to take it from; its members may disagree.
    """
    members = _members_recorded(model_path)
    return members[0][1] if len(members) == 1 else None


def inference_settings(model_path, window: str | None = None, tta: str | None = None) -> InferenceSettings:
    """What ``predict``, ``evaluate --model`` and the app run with: what was asked, else the run's
    recorded best (per setting), else the training patch without TTA.

    Which window is better depends on the model (a small patch sees little
    context, so the whole crop can score higher), so the run measures it on
    its validation split rather than the code guessing.  An ensemble follows
    its members' records (:func:`ensemble_settings`).
    """
    if window not in (None, "") and tta not in (None, ""):
        return InferenceSettings(window=window, tta=tta, source="asked")
    members = _members_recorded(model_path)
    if len(members) > 1:
        return ensemble_settings(members, window, tta)
    recorded = members[0][1] if members else None
    source = f"recorded in {recorded.path}" if recorded is not None else "default"
    return InferenceSettings(window=window or (recorded and recorded.window) or DEFAULT_WINDOW,
                             tta=tta or (recorded and recorded.tta) or DEFAULT_TTA, source=source)


def _members_recorded(model_path) -> list[tuple[str, RecordedInference | None]]:
    """(model path, its run's inference.json) for every model ``--model`` names; [] when they cannot be found."""
    try:
        paths = expand_models(model_path)
    except ModelError:
        return []
    return [(path, run.inference if run else None) for path, run in ((p, _run_of(p)) for p in paths)]


def ensemble_settings(members: list[tuple[str, RecordedInference | None]], window: str | None = None,
                      tta: str | None = None) -> InferenceSettings:
    """An ensemble's window and TTA: what was asked, else what its members recorded.

    Members that agree are followed (folds chosen on their own validation patients usually do); when
    they differ, the choice of most members wins (the first member's among equals) and the source says
    what each member recorded, so the user sees the choice was made and can pass --window/--tta.
    """
    chosen, notes = {}, []
    for name, label, asked, default in (("window", "window", window, DEFAULT_WINDOW), ("tta", "TTA", tta, DEFAULT_TTA)):
        if asked:
            chosen[name] = asked
            notes.append(f"{label} asked")
            continue
        values = [(path, getattr(rec, name) if rec else None) for path, rec in members]
        chosen[name], note = _agreed(values, default)
        notes.append(f"{label} {note}")
    return InferenceSettings(window=chosen["window"], tta=chosen["tta"], source="; ".join(notes))


def _agreed(values: list[tuple[str, str | None]], default: str) -> tuple[str, str]:
    """The members' common value and why it was taken; see :func:`ensemble_settings`."""
    recorded = [v for _, v in values if v]
    if not recorded:
        return default, "default (no member recorded one)"
    if len(recorded) == len(values) and len(set(recorded)) == 1:
        return recorded[0], f"recorded by all {len(values)} members"
    best = collections.Counter(recorded).most_common(1)[0][0]  # Counter keeps first-seen order among equals
    each = ", ".join(f"{_member_name(path)} {value or 'none'}" for path, value in values)
    return best, f"{best}: the members differ ({each}); chose the value most members recorded (the first among equals)"


def _member_name(model_path: str) -> str:
    """fold_0 for runs/cv/fold_0/model.keras: the run folder names the member."""
    return posixpath.basename(posixpath.dirname(model_path)) or model_path


def expand_models(specs) -> list[str]:
    """Model files from ``--model`` values: ``.keras`` files, run folders, or cross-validation workdirs (all folds)."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise ModelError("no model given")
    paths = []
    for spec in specs:
        if storage.is_dir(spec):
            if storage.exists(trained_run.model_file(spec)):
                paths.append(trained_run.model_file(spec))
                continue
            folds = trained_run.fold_models(spec)
            if not folds:
                raise ModelError(f"{spec} holds neither {trained_run.MODEL_FILE} nor "
                                 f"{trained_run.FOLD_PREFIX}<k>/{trained_run.MODEL_FILE} (a cross-validation workdir)")
            paths += folds
        elif storage.exists(spec):
            paths.append(spec)
        else:
            raise ModelError(f"model file {spec} does not exist")
    if len(set(paths)) != len(paths):
        raise ModelError(f"the same model is named twice: {paths}")
    return paths


def check_same_preprocessing(members: list[tuple[str, dict, str]]) -> None:
    """Refuse to ensemble models whose inputs would be prepared differently.

    ``members``: (model path, preprocessing config, dataset version).  The
    ensemble preprocesses each patient once, so every member must have been
    trained on the same challenge, preprocessing and dataset version.
    """
    first_path, first_cfg, first_version = members[0]
    for path, cfg, version in members[1:]:
        if cfg.get("layout") != first_cfg.get("layout"):
            raise ModelError(f"cannot ensemble {first_path} ({first_cfg.get('layout')}) with {path} "
                             f"({cfg.get('layout')}): they were trained for different challenges")
        differing = sorted(k for k in set(cfg) | set(first_cfg) if cfg.get(k) != first_cfg.get(k))
        if differing:
            raise ModelError(f"cannot ensemble {first_path} with {path}: their preprocessing differs in "
                             f"{', '.join(differing)}")
        if version != first_version:
            raise ModelError(f"cannot ensemble {first_path} (dataset version {first_version}) with {path} "
                             f"(dataset version {version}): train every member on the same dataset version")


def find_postprocessing(specs, runs: list[TrainedRun | None]) -> str | None:
    """The ``postprocessing.json`` that goes with the models, if any.

    Looked for in a folder named as the model (a cross-validation workdir),
    else in the run folder of a single model, else in the folder all the
    members' run folders share (the folds of one cross-validation workdir).
    """
    specs = [specs] if isinstance(specs, str) else list(specs)
    candidates = [s for s in specs if storage.is_dir(s)]
    if len(runs) == 1 and runs[0]:
        candidates.append(runs[0].run_dir)
    parents = {trained_run.parent_dir(r.run_dir) for r in runs if r}
    if len(parents) == 1 and len(runs) > 1 and None not in runs:
        candidates.append(parents.pop())
    return trained_run.find_postprocessing(candidates)


def _postprocessing(asked: str | None, specs, runs: list[TrainedRun | None], cfg: dict) -> tuple[str | None, tuple]:
    """(where the rules lie, the rules): ``auto`` the file found with the models, ``none`` none, else a path."""
    from shared import postprocessing as post

    rules_path = None
    if asked == "auto":
        rules_path = find_postprocessing(specs, runs)
    elif asked not in (None, "", "none"):
        if not storage.exists(asked):
            raise ModelError(f"post-processing file {asked} does not exist")
        rules_path = asked
    try:
        return rules_path, tuple(post.load(rules_path, challenges.get(cfg["layout"]))) if rules_path else ()
    except (ValueError, KeyError) as exc:
        raise ModelError(f"cannot use post-processing {rules_path}: {exc}") from None


def load_predictor(model_path, data_dir: str | None = None, window=None, with_model: bool = True,
                   postprocessing: str | None = "auto") -> Predictor:
    """Load a ``.keras`` model, or an ensemble, and the preprocessing of the data it learnt from.

    ``model_path``: a ``.keras`` file, a run folder, a cross-validation workdir
    (all its folds) or a list of these; several models make an ensemble that
    averages their softmax.  ``postprocessing``: ``"auto"`` applies the
    ``postprocessing.json`` found with the models (:func:`find_postprocessing`),
    ``None``/``"none"`` none, anything else is the path of one.
    ``with_model=False`` reads only the preprocessing (``model`` is None): for
    steps that preprocess but never run the network, such as the Beam job's
    Preprocess step, whose workers would otherwise load the model for nothing.
    """
    paths = expand_models(model_path)
    runs = [_run_of(path) for path in paths]
    try:
        data = [trained_run.training_data(run, data_dir) for run in runs]
    except trained_run.RunError as exc:
        raise ModelError(str(exc)) from None
    check_same_preprocessing([(path, d.config, d.version_id) for path, d in zip(paths, data)])
    first = data[0]
    shown = model_path if isinstance(model_path, str) else (paths[0] if len(paths) == 1 else ",".join(model_path))
    rules_path, rules = _postprocessing(postprocessing, model_path, runs, first.config)
    predictor = Predictor(None, shown, first.config, window_size(window, runs[0] and runs[0].patch_size, first.config),
                          first.version_id, first.data_dir, model_paths=tuple(paths), postprocessing=rules,
                          postprocessing_path=rules_path, geometry=first.geometry, runs=tuple(runs))
    if not with_model:
        return predictor
    members = models_lib.load_members(paths, predictor.channels)
    return dataclasses.replace(predictor, model=members[0], models=tuple(members) if len(members) > 1 else ())


def with_window(predictor: Predictor, window) -> Predictor:
    """The same loaded model(s) with another sliding window (``patch``, ``volume`` or X,Y,Z): no reload.

    The training patch is the first member's run's.
    """
    return dataclasses.replace(predictor, window=window_size(window, predictor.patch_size, predictor.preprocess_cfg))
