"""The evaluation of a region model says why its Dice differs from training's (issue 24)."""

from shared import challenges, regions


def test_the_note_names_the_decoding_order_and_the_region_written_last():
    note = regions.decoding(challenges.get("brats2024_gli")).explain()
    assert "in the order WT, TC, ET, NETC, SNFH, RC" in note and "RC last" in note
    assert "training's validation Dice" in note


def test_evaluate_prints_the_note_and_keeps_it_in_the_report():
    from tests.helpers import ROOT

    source = (ROOT / "evaluation" / "evaluate.py").read_text()
    assert 'about["region_decoding"] = predictor.decoding.explain()' in source
