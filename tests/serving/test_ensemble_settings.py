"""An ensemble follows its members' recorded window and TTA (issue 24): agreeing, or the choice said."""

from __future__ import annotations

from serving import predictor as predictor_lib
from shared.trained_run import RecordedInference


def _recorded(window, tta):
    return RecordedInference(window, tta, 2, (), "inference.json", {"window": window, "tta": tta})


def test_members_that_agree_are_followed():
    members = [("runs/cv/fold_0/model.keras", _recorded("volume", "all")),
               ("runs/cv/fold_1/model.keras", _recorded("volume", "all"))]
    settings = predictor_lib.ensemble_settings(members)
    assert (settings.window, settings.tta) == ("volume", "all")
    assert settings.source == "window recorded by all 2 members; TTA recorded by all 2 members"


def test_members_that_differ_get_the_most_common_choice_said():
    members = [("cv/fold_0/model.keras", _recorded("volume", "all")), ("cv/fold_1/model.keras", _recorded("patch", "all")),
               ("cv/fold_2/model.keras", _recorded("patch", None))]
    settings = predictor_lib.ensemble_settings(members)
    assert (settings.window, settings.tta) == ("patch", "all")
    assert "window patch: the members differ (fold_0 volume, fold_1 patch, fold_2 patch)" in settings.source
    assert "TTA all: the members differ (fold_0 all, fold_1 all, fold_2 none)" in settings.source


def test_asked_settings_win_and_no_records_fall_back_to_the_default():
    members = [("a/model.keras", None), ("b/model.keras", None)]
    settings = predictor_lib.ensemble_settings(members, tta="axes")
    assert (settings.window, settings.tta) == (predictor_lib.DEFAULT_WINDOW, "axes")
    assert settings.source == "window default (no member recorded one); TTA asked"


def test_inference_settings_of_an_ensemble_reads_every_members_run(monkeypatch):
    runs = {"cv/fold_0/model.keras": _recorded("volume", "all"), "cv/fold_1/model.keras": _recorded("volume", "all")}
    monkeypatch.setattr(predictor_lib, "expand_models", lambda spec: list(runs))
    monkeypatch.setattr(predictor_lib, "_run_of", lambda path: type("Run", (), {"inference": runs[path]})())
    settings = predictor_lib.inference_settings("cv")
    assert (settings.window, settings.tta) == ("volume", "all") and "all 2 members" in settings.source
