"""brats2026 against the official BraTS 2026 package (brats-evaluation 0.0.10, the oracle in .oracle-venv).

Randomised multi-lesion cases at 1 mm, 1.2 mm, 1x1x2.5 mm and an oblique
affine, every region of GLI, PED, METS and MEN-RT: the library call on arrays
with the true spacing, and the ``brats-evaluate`` + ``brats-parse-metrics``
commands on files, all counts and metrics compared.  Each test is one
subprocess call of the oracle (tests/evaluation/brats_oracle.py).
"""

from __future__ import annotations

import csv
import math
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from evaluation import lesions, official, scoring
from shared import challenges
from tests.evaluation import oracle_cases as oc

SPACINGS = {"1mm": (1.0, 1.0, 1.0), "1.2mm": (1.2, 1.2, 1.2), "aniso": (1.0, 1.0, 2.5)}
LESION_KEYS = (("tp", "tp"), ("fp", "fp"), ("fn", "fn"), ("precision", "prec"), ("recall", "rec"), ("f1", "rq"),
               ("dice", "sq_dsc"), ("hd95", "sq_hd95"), ("nsd", "sq_nsd"), ("pq", "pq_dsc"))


def _same(ours, theirs) -> bool:
    ours = float("nan") if ours is None else float(ours)
    theirs = float("nan") if theirs in (None, "") else float(theirs)
    if math.isnan(ours) or math.isnan(theirs):
        return math.isnan(ours) and math.isnan(theirs)
    return ours == theirs or abs(ours - theirs) <= 1e-9 * max(1.0, abs(theirs))


def _array_cases():
    cases = {}
    for config, (name, labels) in oc.CONFIGS.items():
        for seed in range(2):
            for tag, spacing in SPACINGS.items():
                truth, pred = oc.random_case(100 * seed + len(cases), labels)
                cases[f"{config}-{seed}-{tag}"] = (config, name, truth, pred, spacing)
    return cases


def test_library_call_on_arrays_equals_ours_in_every_count_and_metric(tmp_path):
    """Lesion counts, F1, matched Dice/HD95/NSD (tolerance = smallest spacing), pq_dsc and the
    whole-region Dice/HD95/NSD (the package's: no spacing) of every region, four tasks, three spacings."""
    cases = _array_cases()
    batch = {"arrays": [{"id": cid, "config": c, "pred": p, "ref": t, "spacing": list(s)}
                        for cid, (c, _, t, p, s) in cases.items()]}
    found = oc.run_oracle(batch, tmp_path)["arrays"]
    differences, compared = [], 0
    for cid, (_, name, truth, pred, spacing) in cases.items():
        challenge = challenges.get(name)
        ours = lesions.score_lesions(pred, truth, challenge, spacing, "brats2026")
        whole = official.whole_region_row(pred, truth, challenge.region_classes(), spacing, use_spacing=False)
        for region in ours.regions:
            theirs = found[cid][region.region.lower()]
            n_truth = sum(1 for r in region.lesions if r["kind"] == "truth")
            pairs = [(k, region.scores[k], theirs.get(t)) for k, t in LESION_KEYS]
            pairs += [("n_ref", n_truth, theirs["n_ref_instances"])]
            pairs += [(f"global_{m}", whole[f"{m}_{region.region}"], theirs[f"global_bin_{o}"])
                      for m, o in (("dice", "dsc"), ("hd95", "hd95"), ("nsd", "nsd"))]
            compared += len(pairs)
            differences += [(cid, region.region, k, a, b) for k, a, b in pairs if not _same(a, b)]
    assert not differences, differences[:20]
    assert compared > 900


def _oblique_affine() -> np.ndarray:
    """A rotation about z by 17 degrees: 1 mm voxels, stored (float32 sform) with norms of 1.0000000x."""
    angle = np.deg2rad(17.0)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    affine[:3, 3] = [-20.0, -18.0, -15.0]
    return affine


def _file_patients():
    """(pid, affine, truth, prediction) at 1 mm, 1.2 mm, 1x1x2.5 mm and oblique; GLI 2024 labels (RC present)."""
    out = []
    geometries = [np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([1.2, 1.2, 1.2, 1.0]), np.diag([1.0, 1.0, 2.5, 1.0]),
                  _oblique_affine()]
    for n, affine in enumerate(geometries):
        truth, pred = oc.random_case(700 + n, (1, 2, 3, 4))
        truth[2:5, 2:5, 2:5] = 4  # a resection cavity in every truth: GLI 2024 without --challenge
        out.append((f"BraTS-GLI-{n + 1:05d}-000", affine, truth, pred))
    return out


def _save(array, affine, path) -> None:
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)


def _other_patients(prefix: str, labels, seed: int):
    """Two patients of another task (PED or MEN-RT) at 1 mm and 1x1x2.5 mm."""
    out = []
    for n, affine in enumerate((np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([1.0, 1.0, 2.5, 1.0]))):
        truth, pred = oc.random_case(seed + n, labels)
        out.append((prefix.format(n=n + 1), affine, truth, pred))
    return out


def _write_cohort(root, patients, pred_name="{pid}.nii.gz", seg="{pid}-seg.nii.gz"):
    """Our layout (one folder per patient), a flat reference folder for brats-evaluate, and predictions."""
    truth_dir, ref_dir, pred_dir = (os.path.join(str(root), d) for d in ("truth", "ref", "pred"))
    for d in (truth_dir, ref_dir, pred_dir):
        os.makedirs(d, exist_ok=True)
    for pid, affine, truth, pred in patients:
        os.makedirs(os.path.join(truth_dir, pid), exist_ok=True)
        _save(truth, affine, os.path.join(truth_dir, pid, seg.format(pid=pid)))
        shutil.copy(os.path.join(truth_dir, pid, seg.format(pid=pid)), ref_dir)
        _save(pred, affine, os.path.join(pred_dir, pred_name.format(pid=pid)))
    return truth_dir, ref_dir, pred_dir


def _read_csv(text_or_rows):
    rows = text_or_rows if isinstance(text_or_rows, list) else list(csv.DictReader(open(text_or_rows)))
    return {r["subject_id"].replace("-seg.nii.gz", "").replace("_gtv.nii.gz", ""): r for r in rows}


def _compare_csv(ours: dict, theirs: dict) -> list:
    differences = []
    assert set(ours) == set(theirs)
    for subject, row in theirs.items():
        assert set(row) == set(ours[subject]), set(row) ^ set(ours[subject])
        differences += [(subject, c, ours[subject][c], v) for c, v in row.items()
                        if c != "subject_id" and not _same(ours[subject][c] or None, v)]
    return differences


def _mets_patients():
    patients = []
    for n in range(3):
        truth, pred = oc.random_case(900 + n, (1, 2, 3, 4))
        truth[1:3, 1:3, 1:3], pred[30:32, 30:32, 1:3] = 3, 3  # a small lesion missed, a small false positive
        patients.append((f"BraTS-MET-{n + 1:05d}-000", np.diag([1.0, 1.0, 1.0, 1.0]), truth, pred))
    return patients


@pytest.fixture(scope="module")
def on_files(tmp_path_factory):
    """GLI 2024 and METS cohorts on disk and the oracle's answers for both, in one subprocess call."""
    root = tmp_path_factory.mktemp("official_files")
    gli, mets = _file_patients(), _mets_patients()
    gli_dirs, mets_dirs = _write_cohort(root / "gli", gli), _write_cohort(root / "mets", mets)
    ped_dirs = _write_cohort(root / "ped", _other_patients("BraTS-PED-{n:05d}-000", (1, 2, 3, 4), 40))
    men_dirs = _write_cohort(root / "men", _other_patients("BraTS-MEN-RT-{n:04d}-1", (1,), 50),
                             seg="{pid}_gtv.nii.gz")
    aniso = gli[2]
    batch = {"files": [{"id": "gli", "config": "gli", "ref_dir": gli_dirs[1], "pred_dir": gli_dirs[2]},
                       {"id": "mets", "config": "mets", "ref_dir": mets_dirs[1], "pred_dir": mets_dirs[2],
                        "mets": True},
                       {"id": "ped", "config": "ped", "ref_dir": ped_dirs[1], "pred_dir": ped_dirs[2]},
                       {"id": "MenRT", "config": "MenRT", "ref_dir": men_dirs[1], "pred_dir": men_dirs[2]}],
             "arrays": [{"id": "aniso", "config": "gli", "pred": aniso[3], "ref": aniso[2],
                         "spacing": [1.0, 1.0, 2.5]}]}
    return {"gli": gli, "gli_dirs": gli_dirs, "mets_dirs": mets_dirs, "root": root,
            "ped_dirs": ped_dirs, "men_dirs": men_dirs,
            "oracle": oc.run_oracle(batch, root)}


def test_brats_evaluate_on_files_equals_our_official_csv(on_files):
    """The command on files (SimpleITK's spacing on reversed axes, whole-region metrics without spacing)
    and `brats-parse-metrics seg` against official_scores.csv of `--scheme=brats2026`, including the
    mean/std/median rows; GLI 2024 found from the labels; the corrected scheme differs on the
    anisotropic case only, where it equals the library call with the true spacing."""
    truth_dir, _, pred_dir = on_files["gli_dirs"]
    found, aniso = on_files["oracle"], on_files["gli"][2]
    notes: list[str] = []
    rows, failures, challenge = scoring.score_folders(pred_dir, truth_dir, scheme="brats2026", notes=notes,
                                                      echo=lambda _: None)
    assert challenge.name == "brats2024_gli" and not failures and any("detected" in n for n in notes)
    report = scoring.write_report(rows, failures, str(on_files["root"] / "out"), {}, challenge, "brats2026")
    assert not _compare_csv(_read_csv(report.summary["official_csv"]), _read_csv(found["files"]["gli"]["seg"]))

    corrected, _, _ = scoring.score_folders(pred_dir, truth_dir, scheme="brats2026_corrected", echo=lambda _: None)
    by_pid = {r["patient"]: r for r in corrected}
    leaderboard = {r["patient"]: r for r in rows}
    for pid in ("BraTS-GLI-00001-000",):  # 1 mm: the same lesion numbers
        assert all(_same(leaderboard[pid][k], v) for k, v in by_pid[pid].items() if k.startswith("lesion_"))
    true_spacing = found["arrays"]["aniso"]["wt"]
    assert _same(by_pid[aniso[0]]["lesion_hd95_WT"], true_spacing["sq_hd95"])
    assert not _same(leaderboard[aniso[0]]["lesion_hd95_WT"], true_spacing["sq_hd95"])


def test_mets_parser_small_lesion_detection(on_files):
    """`brats-parse-metrics mets` (volume 20 mm3, Dice 0.1): small/large detection counts and F1 and the
    large-lesion means, against official_scores.csv of a METS cohort."""
    truth_dir, _, pred_dir = on_files["mets_dirs"]
    rows, failures, challenge = scoring.score_folders(pred_dir, truth_dir, "brats2025_met", scheme="brats2026",
                                                      echo=lambda _: None)
    report = scoring.write_report(rows, failures, str(on_files["root"] / "mets_out"), {}, challenge, "brats2026")
    theirs = _read_csv(on_files["oracle"]["files"]["mets"]["mets"])
    assert not _compare_csv(_read_csv(report.summary["official_csv"]), theirs)
    assert any(float(r["small_instance_fn_et"] or 0) > 0 for r in theirs.values())


@pytest.mark.parametrize("task,challenge_name", [("ped", "brats2024_ped"), ("MenRT", "brats2024_men_rt")])
def test_brats_evaluate_on_files_ped_and_men_rt(on_files, task, challenge_name):
    """PED (every region) and MEN-RT (GTV) at 1 mm and 1x1x2.5 mm through brats-evaluate and the seg parser."""
    truth_dir, _, pred_dir = on_files["ped_dirs" if task == "ped" else "men_dirs"]
    rows, failures, challenge = scoring.score_folders(pred_dir, truth_dir, challenge_name, scheme="brats2026",
                                                      echo=lambda _: None)
    assert rows and not failures
    report = scoring.write_report(rows, failures, str(on_files["root"] / f"{task}_out"), {}, challenge, "brats2026")
    assert not _compare_csv(_read_csv(report.summary["official_csv"]),
                            _read_csv(on_files["oracle"]["files"][task]["seg"]))


# ---------------------------------------------------------------- without the oracle ----

def test_whole_region_2026_rules_and_the_parser_373():
    """Empty in both: NaN (left out); empty in one or no shared voxel: Dice 0, NSD 0, HD95 inf,
    which the official CSV writes as 373; the package's unit spacing vs the corrected mm."""
    empty, cube = np.zeros((12, 12, 12), bool), np.zeros((12, 12, 12), bool)
    cube[2:6, 2:6, 2:6] = True
    far = np.roll(cube, 6, axis=0)
    assert all(math.isnan(v) for v in official.whole_region(empty, empty, (1, 1, 1), False).values())
    assert official.whole_region(cube, empty, (1, 1, 1), False) == {"dice": 0.0, "hd95": math.inf, "nsd": 0.0}
    assert official.whole_region(far, cube, (1, 1, 1), False) == {"dice": 0.0, "hd95": math.inf, "nsd": 0.0}
    shifted = np.roll(cube, 1, axis=2)
    unit = official.whole_region(shifted, cube, (1, 1, 2.5), False)
    mm = official.whole_region(shifted, cube, (1, 1, 2.5), True)
    assert unit["hd95"] == 1.0 and mm["hd95"] == 2.5 and mm["nsd"] < 1.0
    from evaluation import parser_csv
    row = {"patient": "p", "dice_WT": 0.0, "hd95_WT": math.inf, "nsd_WT": 0.0,
           **{f"lesion_{m}_WT": v for m, v in dict(tp=0, fp=1, fn=1, precision=0.0, recall=0.0, f1=0.0, dice=0.0,
                                                    nsd=0.0, hd95=math.inf).items()}}
    out = parser_csv.patient_row(row, ["WT"], {}, mets=False)
    assert out["global_hd95_wt"] == 373.0 and math.isinf(out["lesionwise_hd95_mean_wt"])


def test_header_zooms_not_affine_norms(tmp_path):
    """An oblique affine: the header says 1.0 mm, the stored affine's column norms 1.00000002; scoring uses
    the header (a one-voxel distance stays within an exact <= tolerance)."""
    from shared import volume_ops
    path = str(tmp_path / "x.nii.gz")
    _save(np.zeros((4, 4, 4)), _oblique_affine(), path)
    image = nib.load(path)
    assert volume_ops.header_spacing(image) == (1.0, 1.0, 1.0)
    assert volume_ops.voxel_spacing(image.affine) != (1.0, 1.0, 1.0)


def test_cohort_means_say_what_they_left_out():
    from shared import metrics
    stats = metrics.describe([1.0, 3.0, math.inf, math.nan])
    assert (stats["mean"], stats["n"], stats["n_inf"], stats["n_nan"]) == (2.0, 2, 1, 1)
    assert math.isinf(stats["mean_with_inf"]) and "1 infinite, 1 NaN" in stats["treatment"]


def test_gli_2023_named_explicitly_refuses_label_4_with_the_flag_to_pass(tmp_path):
    patients = _file_patients()[:1]
    truth_dir, _, pred_dir = _write_cohort(tmp_path, patients, pred_name="{pid}_seg.nii.gz")
    rows, failures, _ = scoring.score_folders(pred_dir, truth_dir, "brats2023_gli", echo=lambda _: None)
    assert not rows and "--challenge=brats2024_gli" in failures[0]["reason"]
    notes: list[str] = []
    rows, _, challenge = scoring.score_folders(pred_dir, truth_dir, scheme="brats2026", notes=notes,
                                               echo=lambda _: None)
    assert challenge.name == "brats2024_gli" and rows
    assert any("_seg.nii.gz" in n and "brats-evaluate will not find" in n for n in notes)


def test_pred_dir_scoring_imports_no_tensorflow(tmp_path):
    """evaluate --pred_dir runs no model: TensorFlow (seconds of CPU to import) stays out."""
    import subprocess
    import sys
    truth_dir, _, pred_dir = _write_cohort(tmp_path, _file_patients()[:1])
    code = ("import sys\nfrom absl import app\nfrom evaluation import evaluate\n"
            f"sys.argv = ['evaluate', '--pred_dir={pred_dir}', '--truth_dir={truth_dir}', '--scheme=brats2026', "
            f"'--output_dir={tmp_path / 'out'}']\n"
            "try:\n    app.run(evaluate.main)\nexcept SystemExit:\n    pass\n"
            "print('TF', 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=oc.ROOT, timeout=300)
    assert "TF False" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert os.path.exists(tmp_path / "out" / "official_scores.csv")


def test_predictions_named_as_the_official_tool_pairs_them_are_found(tmp_path):
    """Any name ending in the patient's NNNNN-NNN.nii.gz (how brats-evaluate pairs) is found too."""
    truth_dir, _, pred_dir = _write_cohort(tmp_path, _file_patients()[:1], pred_name="mymodel_{pid}.nii.gz")
    assert scoring.find_prediction(pred_dir, "BraTS-GLI-00001-000").endswith("mymodel_BraTS-GLI-00001-000.nii.gz")
    rows, failures, _ = scoring.score_folders(pred_dir, truth_dir, "brats2024_gli", echo=lambda _: None)
    assert rows and not failures


def test_gli_without_any_resection_cavity_reads_as_2023_and_says_which_flag_changes_it(tmp_path):
    pid, affine, truth, pred = _file_patients()[0]
    truth[truth == 4], pred[pred == 4] = 0, 0
    truth_dir, _, pred_dir = _write_cohort(tmp_path, [(pid, affine, truth, pred)])
    notes: list[str] = []
    rows, _, challenge = scoring.score_folders(pred_dir, truth_dir, notes=notes, echo=lambda _: None)
    assert challenge.name == "brats2023_gli" and rows
    assert any("--challenge=brats2024_gli" in n for n in notes)
