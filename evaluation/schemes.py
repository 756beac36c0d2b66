"""Scoring schemes: which BraTS evaluation a report reproduces.

A number such as "HD95 12.3 mm" means nothing until one knows how misses,
empty regions and the 95th percentile were handled, and the challenges changed
all three over the years.  A :class:`Scheme` names one complete procedure:

* the whole-region HD95 reduction (``pooled`` or ``max_directed``, see
  :data:`shared.metrics.HD95_REDUCTIONS`);
* the lesion procedure: none (2017-2022 ranking), ``brats2023`` (truth lesions
  merged by dilation, predicted components hit a lesion through its dilated
  zone, misses and false positives penalised), ``brats2024`` (the same, with
  predicted components merged by dilation too and predicted lesions at or below
  the volume threshold dropped), or ``matched`` (the 2026 ``brats-evaluation``
  package built on panoptica: one-to-one Hungarian matching of components;
  ``brats2026`` is its leaderboard, faults included, ``brats2026_corrected``
  the same rules with the spacing applied correctly, see :mod:`evaluation.official`);
* the lesion HD95: its surface (``voxel`` or ``surfel``, see
  :data:`evaluation.surface.SURFACES`: the 2023-2025 code takes DeepMind's
  area-weighted surface elements), its reduction, and the empty-region rule.

The lesion parameters (dilation, volume threshold, penalty) are the
challenge's, from :mod:`shared.challenges`; a scheme only says how they are
used.  :func:`default_for` picks the scheme of a challenge's own year, and
:func:`describe` is the sentence every report prints.

Sources: rachitsaluja/BraTS-2023-Metrics ``metrics.py``; rachitsaluja/BraTS-2024-Metrics
``metrics_*.py`` (July 2024 and May 2025 revisions); BraTS/BraTS_evaluation
``configs/config_*.yaml`` with BrainLesion/panoptica; ``field_facts.md``.
"""

from __future__ import annotations

import dataclasses
import types

from evaluation import surface
from shared import metrics
from shared.challenges import Challenge

LESION_METHODS = ("none", "brats2023", "brats2024", "matched")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One evaluation procedure, named after the challenge year that used it."""

    name: str
    title: str
    lesion_method: str  # one of LESION_METHODS
    hd95_reduction: str  # whole-region HD95 (metrics.HD95_REDUCTIONS)
    lesion_hd95_reduction: str  # per-lesion HD95
    empty_rule: str  # what a region empty in truth, prediction or both scores
    nsd_tolerance_mm: float | None = None  # NSD tolerance (matched only); None: the case's smallest spacing
    lesion_surface: str = "voxel"  # per-lesion HD95 surface (surface.SURFACES)
    # 2026 only (evaluation.official): the whole-region rule and the spacing as the official package uses it.
    whole_region: str = "brats2020"  # "brats2020" (shared.metrics) or "panoptica" (Dice, HD95, NSD; NaN/inf)
    whole_region_spacing: bool = True  # False: unit spacing, NSD tolerance 0.5 (the official package)
    lesion_spacing: str = "header"  # "header" zooms, or "sitk_reversed" as brats-evaluate reads files

    def __post_init__(self):
        if self.lesion_method not in LESION_METHODS:
            raise ValueError(f"{self.name}: unknown lesion method {self.lesion_method!r}")
        for reduction in (self.hd95_reduction, self.lesion_hd95_reduction):
            if reduction not in metrics.HD95_REDUCTIONS:
                raise ValueError(f"{self.name}: unknown HD95 reduction {reduction!r}")
        if self.lesion_surface not in surface.SURFACES:
            raise ValueError(f"{self.name}: unknown lesion surface {self.lesion_surface!r}")
        if self.whole_region not in ("brats2020", "panoptica"):
            raise ValueError(f"{self.name}: unknown whole-region rule {self.whole_region!r}")
        if self.lesion_spacing not in ("header", "sitk_reversed"):
            raise ValueError(f"{self.name}: unknown lesion spacing {self.lesion_spacing!r}")
        if self.lesion_surface == "surfel" and self.lesion_method == "matched":
            raise ValueError(f"{self.name}: matched lesions use surface voxels (their NSD needs them)")
        if self.lesion_surface == "surfel" and self.lesion_hd95_reduction != "max_directed":
            raise ValueError(f"{self.name}: the surfel HD95 is the larger directed percentile (max_directed)")

    @property
    def lesionwise(self) -> bool:
        """Whether the scheme scores lesions at all."""
        return self.lesion_method != "none"


_PENALISED = ("a missed lesion scores Dice 0 and HD95 = the challenge's penalty; each false-positive "
              "component adds a lesion with Dice 0 and HD95 = penalty; lesions at or below the volume "
              "threshold drop out of sums and counts; no lesion and no false positive gives Dice 1, HD95 0")

_EMPTY_2026 = ("a region empty in both is NaN (left out of means); with lesions but no match: Dice 0, NSD 0, "
               "HD95 inf, F1 0, PQ 0; whole region: empty in one or no shared voxel gives Dice 0, NSD 0, HD95 inf "
               f"(the official parser's CSV writes {373})")

# What brats2026 computes that brats2026_corrected does not (every 2026 report states it).
SPACING_2026 = {
    "brats2026": "as the official package and leaderboard: whole-region Dice/HD95/NSD ignore the voxel spacing "
                 "(HD95 in voxels, NSD tolerance 0.5 voxel), and lesions get the header zooms in reversed axis "
                 "order (brats-evaluate pairs SimpleITK's z,y,x array with x,y,z spacing; exact on isotropic "
                 "grids, wrong on anisotropic ones); use --scheme=brats2026_corrected for the spacing applied "
                 "correctly",
    "brats2026_corrected": "corrected, unlike the leaderboard (--scheme=brats2026): whole-region metrics in mm "
                           "with the NSD tolerance at the smallest spacing, and lesions with the header zooms "
                           "on their own axes; differs from the official numbers on non-1 mm or anisotropic "
                           "cases only",
}

_ENTRIES = (
    Scheme("brats2020", "BraTS 2017-2022 whole-region ranking", "none", "max_directed", "max_directed",
           empty_rule=f"both empty: Dice 1, HD95 0; one empty: Dice 0, HD95 {metrics.EMPTY_HD95} mm; kept in means"),
    Scheme("nnunet", "nnU-Net's BraTS evaluation (MedPy hd95)", "none", "pooled", "pooled",
           empty_rule=f"both empty: Dice 1, HD95 0; one empty: Dice 0, HD95 {metrics.EMPTY_HD95} mm; kept in means"),
    Scheme("brats2023", "BraTS 2023 lesion-wise (BraTS-2023-Metrics)", "brats2023", "max_directed", "max_directed",
           empty_rule=_PENALISED, lesion_surface="surfel"),
    Scheme("brats2024", "BraTS 2024-2025 lesion-wise (BraTS-2024-Metrics)", "brats2024", "max_directed",
           "max_directed", empty_rule=_PENALISED + "; predicted lesions are merged by dilation and those at "
           "or below the threshold (counted in voxels, in mm3 for MEN-RT) are dropped before matching; "
           "lesions of the tissues the task joins (GLI: NETC, ET, RC, SNFH; MET, SSA: ET) that touch the same "
           "lesion of another tissue become one", lesion_surface="surfel"),
    Scheme("brats2026", "BraTS 2026 leaderboard (brats-evaluation 0.0.10 / panoptica)", "matched", "pooled",
           "pooled", empty_rule=_EMPTY_2026, whole_region="panoptica", whole_region_spacing=False,
           lesion_spacing="sitk_reversed"),
    Scheme("brats2026_corrected", "BraTS 2026 rules with the spacing corrected", "matched", "pooled", "pooled",
           empty_rule=_EMPTY_2026, whole_region="panoptica", whole_region_spacing=True, lesion_spacing="header"),
)

_SURFACE_WORDS = {"voxel": "surface voxels", "surfel": "area-weighted surface elements (DeepMind surface-distance)"}

SCHEMES: types.MappingProxyType = types.MappingProxyType({s.name: s for s in _ENTRIES})

# The scheme each challenge was ranked with.  BraTS MEN 2024 kept the 2023 code
# (no merging of predictions); every other 2024/2025 task used the 2024 code.
_DEFAULTS = {
    "brats2020": "brats2020",
    "brats2021": "brats2020",
    "brats2023_gli": "brats2023",
    "brats2023_men": "brats2023",
}


def get(name: str) -> Scheme:
    """The scheme ``name``; an unknown name lists the known ones."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scoring scheme {name!r}; known: {', '.join(SCHEMES)}") from None


def default_for(challenge: Challenge) -> Scheme:
    """The scheme of the challenge's own leaderboard."""
    if challenge.name in _DEFAULTS:
        return SCHEMES[_DEFAULTS[challenge.name]]
    return SCHEMES["brats2024" if challenge.lesion_rules else "brats2020"]


def resolve(challenge: Challenge, name: str | None) -> Scheme:
    """``name``'s scheme (the challenge's default when None), refused where the challenge cannot use it."""
    scheme = get(name) if name else default_for(challenge)
    if scheme.lesion_method in ("brats2023", "brats2024") and not challenge.lesion_rules:
        raise ValueError(f"scheme {scheme.name} needs lesion-wise parameters, and {challenge.name} has none "
                         "(its challenge had no lesion-wise ranking); use brats2026 to match lesions")
    return scheme


def _tolerance_words(scheme: Scheme) -> str:
    if scheme.nsd_tolerance_mm is None:
        return "the case's smallest voxel spacing (panoptica's default)"
    return f"{scheme.nsd_tolerance_mm:g} mm"


def describe(scheme: Scheme, challenge: Challenge | None = None) -> str:
    """The sentence a report prints: scheme, HD95 reductions, empty-region rule, and the parameters used."""
    text = (f"Scheme {scheme.name} ({scheme.title}). Whole-region HD95: {scheme.hd95_reduction}. ")
    if scheme.lesionwise:
        text += (f"Lesions: 26-connected components, method {scheme.lesion_method}, per-lesion HD95 "
                 f"{scheme.lesion_hd95_reduction} over {_SURFACE_WORDS[scheme.lesion_surface]}; "
                 f"{scheme.empty_rule}.")
    else:
        text += f"Empty regions: {scheme.empty_rule}."
    if scheme.name in SPACING_2026:
        text += f" Spacing: {SPACING_2026[scheme.name]}."
    if scheme.lesion_method == "matched":
        text += (f" Matching: Hungarian on 1 - Dice, any overlap counts; normalised surface Dice at "
                 f"{_tolerance_words(scheme)}; PQ = mean Dice of matches x F1 (pq_dsc).")
    elif scheme.lesionwise and challenge is not None and challenge.lesion_rules:
        rules = ", ".join(f"{r} {rule.dilation}/{rule.min_volume_mm3:g}" for r, rule in challenge.lesion_rules.items())
        text += (f" {challenge.name}: dilation/threshold mm3 {rules}; penalty {challenge.lesion_penalty_mm}"
                 f"{' (volume diagonal, voxels)' if isinstance(challenge.lesion_penalty_mm, str) else ' mm'}")
        if scheme.lesion_method == "brats2024":
            text += f"; predicted lesions thresholded in {challenge.lesion_prediction_unit}"
            if challenge.lesion_joins:
                text += "; joined across tissues: " + ", ".join(
                    f"{j.region} through {'/'.join(j.partners)}" for j in challenge.lesion_joins)
        text += "."
    return text
