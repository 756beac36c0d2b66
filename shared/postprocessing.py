"""Post-processing of predicted class volumes, chosen on cross-validation folds as nnU-Net does.

Three kinds of rule, each a small JSON-able dict so a run can store the ones
it chose (``postprocessing.json``, :data:`shared.trained_run.POSTPROCESSING_FILE`) and prediction
can repeat them:

* ``{"rule": "et_to_core", "max_voxels": N}``: a prediction whose enhancing
  tumour has fewer than N voxels has its ET relabelled as the non-enhancing /
  necrotic core.  nnU-Net's BraTS rule: BraTS scores an ET predicted where the
  truth has none with Dice 0 (and with 1 when both are empty), so a few
  spurious ET voxels cost a whole patient's ET Dice, while as core they keep
  the tumour core and whole tumour unchanged.  Only for challenges whose ET is
  one label inside a tumour core that also holds a core label (NCR / NETC).
* ``{"rule": "keep_largest", "region": "WT"}`` keeps the largest connected
  component of the region (the rest becomes background);
  ``{"rule": "drop_small", "region": "WT", "min_voxels": N}`` drops its
  components below N voxels.  Against false positives far from the tumour.
* ``{"rule": "fill_core"}``: voxels the predicted tumour core (TC) encloses
  in 3D become its core label (NCR / NETC).  Not an nnU-Net rule: a glioma's
  necrosis lies inside its enhancing rim, and a small-patch model that sees
  the rim but not the whole core calls the inside oedema.  Only for the
  challenges the ET rule applies to, and only kept where validation gains.

Components are 26-connected (faces, edges and corners), so one tumour is not
cut into pieces by a diagonal step.  Voxel counts are on the grid the rules
were chosen on: the model's cropped (preprocessed) grid, where prediction
applies them too.

:func:`choose` picks, greedily and one kind after another (components first,
then the core filling, then ET), the rule that raises the mean per-patient Dice (mean over the
challenge's regions) over the folds' validation predictions, and keeps none
of a kind unless it improves on what was chosen before.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from shared import challenges as challenges_lib
from shared.challenges import Challenge

RULES = ("et_to_core", "keep_largest", "drop_small", "fill_core")
CORE_KEYS = ("NCR", "NETC")  # labels ET is relabelled to
ET_THRESHOLDS = (50, 100, 200, 300, 500, 750, 1000)  # voxels; nnU-Net's BraTS submissions used 500 at 1 mm
# voxels; up to 4 mL: the false positives left beside a tumour reached 1,560 voxels in the fifth report and 3,993 in
# the first hard-cohort model (BUILD_NOTES), and keep-largest stays the only rule that keeps one tumour alone
COMPONENT_SIZES = (10, 50, 100, 250, 500, 1000, 2000, 4000)

_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


def core_class(challenge: Challenge) -> tuple[int, int] | None:
    """(ET class, core class) for the ET rule, or None where the challenge has no such pair.

    The rule needs ET to be a single label, a core label (NCR or NETC), and a
    tumour core region holding both, so relabelling leaves TC and WT as they are.
    """
    regions = challenge.regions
    if "ET" not in regions or len(regions["ET"]) != 1 or "TC" not in regions:
        return None
    et = regions["ET"][0]
    for label in challenge.labels:
        if label.key in CORE_KEYS and label.value in regions["TC"] and et in regions["TC"]:
            return challenge.class_of(et), challenge.class_of(label.value)
    return None


def whole_region(challenge: Challenge) -> str:
    """The region component rules act on: WT where the challenge has it, else its first region (GTV)."""
    return "WT" if "WT" in challenge.regions else next(iter(challenge.regions))


def check_rules(rules: Sequence[dict], challenge: Challenge) -> list[dict]:
    """The rules as dicts, or ValueError naming the one that does not fit ``challenge``."""
    checked = []
    for rule in rules:
        name = rule.get("rule") if isinstance(rule, dict) else None
        if name not in RULES:
            raise ValueError(f"unknown post-processing rule {rule!r}; known: {', '.join(RULES)}")
        if name in ("et_to_core", "fill_core") and core_class(challenge) is None:
            raise ValueError(f"rule {name} does not apply to {challenge.name}: it has no enhancing tumour "
                             "inside a tumour core with a necrotic / non-enhancing label")
        if name in ("keep_largest", "drop_small") and rule.get("region") not in challenge.regions:
            raise ValueError(f"rule {name}: {challenge.name} has no region {rule.get('region')!r}; "
                             f"it has {', '.join(challenge.regions)}")
        if name == "et_to_core" and int(rule.get("max_voxels", 0)) < 1:
            raise ValueError(f"rule et_to_core needs max_voxels >= 1, got {rule.get('max_voxels')!r}")
        if name == "drop_small" and int(rule.get("min_voxels", 0)) < 1:
            raise ValueError(f"rule drop_small needs min_voxels >= 1, got {rule.get('min_voxels')!r}")
        checked.append(dict(rule))
    return checked


def _region_mask(classes: np.ndarray, challenge: Challenge, region: str) -> np.ndarray:
    return np.isin(classes, challenge.region_classes()[region])


def _apply_one(classes: np.ndarray, challenge: Challenge, rule: dict) -> np.ndarray:
    name = rule["rule"]
    if name == "et_to_core":
        et, core = core_class(challenge)
        et_voxels = classes == et
        count = int(et_voxels.sum())
        if 0 < count < int(rule["max_voxels"]):
            classes = classes.copy()
            classes[et_voxels] = core
        return classes
    if name == "fill_core":
        return _fill_core(classes, challenge)
    mask = _region_mask(classes, challenge, rule["region"])
    components, n = ndimage.label(mask, structure=_CONNECTIVITY)
    if n == 0:
        return classes
    sizes = np.bincount(components.ravel())[1:]
    if name == "keep_largest":
        keep = np.zeros(n + 1, bool)
        keep[1 + int(np.argmax(sizes))] = True
    else:
        keep = np.concatenate([[False], sizes >= int(rule["min_voxels"])])
    drop = mask & ~keep[components]
    if not drop.any():
        return classes
    classes = classes.copy()
    classes[drop] = 0
    return classes


def _fill_core(classes: np.ndarray, challenge: Challenge) -> np.ndarray:
    """The voxels the tumour core encloses (holes through which no 6-connected path leaves it) as core."""
    core = _region_mask(classes, challenge, "TC")
    holes = ndimage.binary_fill_holes(core) & ~core
    if not holes.any():
        return classes
    classes = classes.copy()
    classes[holes] = core_class(challenge)[1]
    return classes


def apply(classes: np.ndarray, challenge: Challenge, rules: Sequence[dict]) -> np.ndarray:
    """``classes`` (class indices) after ``rules``, in order; the input is not modified."""
    out = np.asarray(classes)
    for rule in check_rules(rules, challenge):
        out = _apply_one(out, challenge, rule)
    return out


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def patient_dice(pred: np.ndarray, truth: np.ndarray, challenge: Challenge) -> float:
    """Mean Dice over the challenge's regions (1 for a region empty in both, as BraTS scores it)."""
    regions = challenge.region_classes()
    return float(np.mean([_dice(np.isin(pred, members), np.isin(truth, members)) for members in regions.values()]))


@dataclasses.dataclass
class Choice:
    """What :func:`choose` decided, and the numbers it decided on."""

    challenge: str
    rules: list[dict]
    mean_dice_before: float
    mean_dice_after: float
    patients: int
    tried: list[dict]  # every candidate: the rules it stood for and the mean Dice they gave

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def candidates(challenge: Challenge, et_thresholds=ET_THRESHOLDS,
               component_sizes=COMPONENT_SIZES) -> list[list[dict]]:
    """The kinds of rule to try, in order; each kind a list of alternatives (at most one is kept)."""
    region = whole_region(challenge)
    # the largest threshold first, keep-largest last: a tie goes to the threshold that drops the most that
    # validation showed to be free to drop, and never to keep-largest, which would also drop a second tumour
    kinds = [[{"rule": "drop_small", "region": region, "min_voxels": int(n)}
              for n in sorted(component_sizes, reverse=True)] + [{"rule": "keep_largest", "region": region}]]
    if core_class(challenge) is not None:
        kinds.append([{"rule": "fill_core"}])
        kinds.append([{"rule": "et_to_core", "max_voxels": int(n)} for n in et_thresholds])
    return kinds


def choose(cases: Iterable[tuple[np.ndarray, np.ndarray]], challenge: Challenge, et_thresholds=ET_THRESHOLDS,
           component_sizes=COMPONENT_SIZES) -> Choice:
    """The rules that raise the mean per-patient Dice over ``cases`` ((prediction, truth) class volumes).

    ``cases`` is read once per kind of rule, so it may be a re-iterable that
    loads the volumes lazily.  A rule is kept only if it strictly improves the
    mean: on a tie, the prediction stays as the network made it.  Among rules
    of a kind that tie, the one listed first in :func:`candidates` wins.  For
    components a tie means validation holds no component between the tied
    thresholds, so it cannot say where specks end; the largest tied threshold
    drops a test patient's larger false positives too (the smallest left them,
    and one seed's WT HD95 median with them: BUILD_NOTES), while keep-largest
    wins only by doing strictly better, as it would also drop a true second
    tumour that validation patients with a single tumour do not show.
    """
    kinds = candidates(challenge, et_thresholds, component_sizes)
    chosen: list[dict] = []
    before = current = None
    tried = []
    for options in kinds:
        totals = np.zeros(len(options) + 1)
        count = 0
        for pred, truth in cases:
            base = apply(pred, challenge, chosen)
            totals[0] += patient_dice(base, truth, challenge)
            for i, rule in enumerate(options, 1):
                totals[i] += patient_dice(_apply_one(base, challenge, rule), truth, challenge)
            count += 1
        if count == 0:
            raise ValueError("no validation predictions to choose post-processing on")
        means = totals / count
        if before is None:
            before = current = float(means[0])
        tried += [{"rules": chosen + [rule], "mean_dice": float(m)} for rule, m in zip(options, means[1:])]
        best = int(np.argmax(means[1:])) + 1
        if means[best] > current + 1e-9:
            chosen.append(options[best - 1])
            current = float(means[best])
    return Choice(challenge.name, chosen, float(before), float(current), count, tried)


def save(path: str, choice: Choice) -> None:
    from shared.storage import write_bytes

    write_bytes(path, (json.dumps(choice.to_json(), indent=2) + "\n").encode())


def load(path: str, challenge: Challenge | None = None) -> list[dict]:
    """The rules stored in a ``postprocessing.json``, checked against ``challenge`` when given."""
    from shared.storage import read_bytes

    stored = json.loads(read_bytes(path))
    rules = stored.get("rules")
    if not isinstance(rules, list):
        raise ValueError(f"{path}: no list of 'rules'")
    if challenge is not None:
        if stored.get("challenge") and stored["challenge"] != challenge.name:
            saved = challenges_lib.get(stored["challenge"]) if stored["challenge"] in challenges_lib.CHALLENGES else None
            if saved is None or saved.regions != challenge.regions:
                raise ValueError(f"{path} was chosen for {stored['challenge']}, not {challenge.name}")
        rules = check_rules(rules, challenge)
    return rules
