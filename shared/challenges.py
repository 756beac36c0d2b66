"""Every BraTS challenge from 2020 to 2025, described as data.

One :class:`Challenge` says everything the project needs to know about a
task: how its folders and files are named, which modalities it ships, what
each label value means, which regions are scored (each a set of label
values), the reference grid its scans live on, the default crop, and the
lesion-wise scoring parameters of its official evaluation.  Discovery,
validation, encoding, training metrics, prediction output, evaluation and the
web app all read this table; adding a challenge is adding an entry to
:data:`CHALLENGES` (``tests/test_challenges.py`` checks every entry the same
way).

Label numbering is the trap this module exists for: label 4 is enhancing
tumour in 2020/2021, resection cavity in GLI 2024+ and MET 2025, and oedema
in PED 2024.  A segmentation's numbering cannot be guessed from its values;
it comes from the challenge.  Each challenge names its numbering
(``label_convention``); challenges that number labels the same way share a
convention, and records store the convention's name.

Inside the project a segmentation is a volume of contiguous *classes*: 0 is
background and class ``i`` is the challenge's ``i``-th label in increasing
value order (so BraTS 2020's 1, 2, 4 become classes 1, 2, 3).  Models have
one output per class.

Sources: ``../shared/notes/field_facts.md`` (layouts, labels, regions and the
lesion-wise parameters, checked against the challenges' own metric code).
"""

from __future__ import annotations

import dataclasses
import math
import types

# Canonical channel names.  The project calls modalities by their BraTS 2020
# names whatever the release (2023+: t2f=flair, t1n=t1, t1c=t1ce, t2w=t2).
MODALITIES = ("flair", "t1", "t1ce", "t2")
SEGMENTATION = "seg"

# Diagonal of the 240x240x155 SRI24 grid at 1 mm: the HD95 of a region present in
# only one of prediction and truth under the 2017-2020 conventions.
SRI24_DIAGONAL_MM = 373.12866

# ``lesion_penalty_mm`` of challenges whose evaluation penalises a missed lesion or a
# false positive with the diagonal of the scored volume, in voxels
# (sqrt(X^2 + Y^2 + Z^2)): native-space tasks, whose volumes differ in shape.
PENALTY_DIAGONAL = "diagonal"


@dataclasses.dataclass(frozen=True)
class Label:
    """One stored label value and what it means."""

    value: int
    key: str  # short name used in tables and column names: NETC, SNFH, ET, RC, ...
    title: str  # for people: "Enhancing tumour"
    colour: tuple[int, int, int]  # RGB 0..255 in pictures and the app's legend


@dataclasses.dataclass(frozen=True)
class Grid:
    """The grid a challenge's scans are registered to; ``shape`` None means native space."""

    name: str
    shape: tuple[int, int, int] | None
    spacing_mm: tuple[float, float, float] | None

    @property
    def native(self) -> bool:
        return self.shape is None


SRI24 = Grid("SRI24", (240, 240, 155), (1.0, 1.0, 1.0))
MNI152 = Grid("MNI152", (182, 218, 182), (1.0, 1.0, 1.0))
NATIVE = Grid("native", None, None)


@dataclasses.dataclass(frozen=True)
class LesionRule:
    """Lesion-wise scoring of one region: truth lesions closer than ``dilation``
    dilations are one lesion; lesions of at most ``min_volume_mm3`` drop out."""

    dilation: int
    min_volume_mm3: float


@dataclasses.dataclass(frozen=True)
class LesionJoin:
    """The BraTS 2024 code's cross-tissue joining of one region's lesions (``combine_lesions_*``).

    After merging by dilation (and, for predictions, dropping small lesions),
    the lesions of ``region`` are joined through each tissue of ``partners`` in
    turn: two lesions (or groups already joined) whose lowest-numbered touching
    lesion of that tissue is the same become one.  "Touching" is an 18-neighbour
    contact (one dilation with ``generate_binary_structure(3, 2)``); lesions of
    a tissue are numbered in C raster order of their dilated zones, as cc3d
    numbers the dilated mask.  A partner is a label key; its lesions follow its
    own lesion rule, or ``partner_rule`` when it is not a scored region.
    """

    region: str
    partners: tuple[str, ...]
    partner_rule: LesionRule | None = None


@dataclasses.dataclass(frozen=True)
class Naming:
    """How a challenge names patient folders and files."""

    patient_dir: str  # regular expression a patient folder name must match
    separator: str  # between the patient id and the channel token
    tokens: dict[str, str]  # canonical channel (and "seg") -> file token
    id_format: str  # the id of case ``index`` (synthetic cohorts, examples): "BraTS-GLI-{index:05d}-000"
    grade_table: str | None = None  # CSV in the cohort root with a Grade column
    misnamed_seg_globs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Challenge:
    """One BraTS task: naming, labels, regions, grid, crop and scoring."""

    name: str  # registry key, also the ``layout`` of a preprocessing config
    title: str
    naming: Naming
    label_convention: str  # name of the numbering; challenges sharing it number alike
    labels: tuple[Label, ...]  # every non-background label, increasing value
    regions: dict[str, tuple[int, ...]]  # scored region -> its label values
    grid: Grid
    crop: dict  # default crop: {"mode": "bbox", "margin": ...}, or "brain" with "size", or "fixed" with "box"
    lesion_rules: dict[str, LesionRule] = dataclasses.field(default_factory=dict)
    lesion_penalty_mm: float | str | None = None  # HD95 of a missed lesion or a false positive (or PENALTY_DIAGONAL)
    # BraTS 2024 code only: the unit its predicted-lesion threshold counts in (the
    # truth threshold is always mm3), and its cross-tissue joining of lesions.
    lesion_prediction_unit: str = "voxels"  # or "mm3" (MEN-RT)
    lesion_joins: tuple[LesionJoin, ...] = ()
    hd95_reduction: str = "max_directed"  # whole-region HD95 of its leaderboard (shared/metrics.py)
    notes: str = ""

    def __post_init__(self):
        values = [label.value for label in self.labels]
        if values != sorted(set(values)) or 0 in values:
            raise ValueError(f"{self.name}: labels must be distinct, increasing and non-zero: {values}")
        for region, members in self.regions.items():
            unknown = set(members) - set(values)
            if unknown:
                raise ValueError(f"{self.name}: region {region} uses undefined labels {sorted(unknown)}")
        for label in self.labels:  # a label scored under a region's name must be that region
            if label.key in self.regions and self.regions[label.key] != (label.value,):
                raise ValueError(f"{self.name}: label {label.key} and region {label.key} differ")
        unknown_rules = set(self.lesion_rules) - set(self.regions)
        if unknown_rules:
            raise ValueError(f"{self.name}: lesion rules for unscored regions {sorted(unknown_rules)}")
        if self.lesion_prediction_unit not in ("voxels", "mm3"):
            raise ValueError(f"{self.name}: lesion_prediction_unit must be voxels or mm3")
        keys = {label.key for label in self.labels}
        for join in self.lesion_joins:
            if join.region not in self.lesion_rules or join.region not in keys:
                raise ValueError(f"{self.name}: joined region {join.region} must be a label with a lesion rule")
            for partner in join.partners:
                if partner not in keys or (partner not in self.lesion_rules and join.partner_rule is None):
                    raise ValueError(f"{self.name}: join partner {partner} needs a label and a lesion rule")

    def tissue_lesion_rule(self, key: str) -> LesionRule:
        """The lesion rule of a tissue taking part in a join: its own, or the join's partner rule."""
        if key in self.lesion_rules:
            return self.lesion_rules[key]
        for join in self.lesion_joins:
            if key in join.partners and join.partner_rule is not None:
                return join.partner_rule
        raise KeyError(f"{self.name}: no lesion rule for {key}")

    def lesion_penalty(self, shape) -> float:
        """HD95 (mm) the lesion-wise scores give a missed lesion or a false positive in a volume of ``shape``."""
        if self.lesion_penalty_mm is None:
            raise ValueError(f"{self.name} has no lesion-wise scoring parameters")
        if self.lesion_penalty_mm == PENALTY_DIAGONAL:
            return float(math.sqrt(sum(int(n) ** 2 for n in shape)))
        return float(self.lesion_penalty_mm)

    # -- channels -------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        """The canonical image channels the challenge ships, in the project's order."""
        return tuple(m for m in MODALITIES if m in self.naming.tokens)

    def modality_names(self, channels: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The challenge's own names of canonical channels (GLI 2024: t2f, t1n, t1c, t2w), for people to read.

        The code calls channels by their 2020 names whatever the release; a user of a 2023+ cohort
        knows them by the tokens in the file names, so messages use those.
        """
        return tuple(self.naming.tokens.get(c, c) for c in (self.modalities if channels is None else channels))

    # -- labels and classes ---------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Model outputs: background plus one per label."""
        return len(self.labels) + 1

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(label.value for label in self.labels)

    @property
    def class_keys(self) -> tuple[str, ...]:
        """Short name of each class, background first (``("background", "NETC", ...)``)."""
        return ("background",) + tuple(label.key for label in self.labels)

    def label(self, key: str) -> Label:
        for label in self.labels:
            if label.key == key:
                return label
        raise KeyError(f"{self.name} has no label {key!r}; it has {[lb.key for lb in self.labels]}")

    def class_of(self, value: int) -> int:
        """The class a stored label value becomes."""
        return self.label_values.index(value) + 1

    def patient_id(self, index: int) -> str:
        """The id of case ``index`` in this challenge's naming (synthetic cohorts, examples)."""
        return self.naming.id_format.format(index=index)

    def region_classes(self) -> dict[str, tuple[int, ...]]:
        """Each scored region as class indices (what models and metrics use)."""
        return {region: tuple(self.class_of(v) for v in members) for region, members in self.regions.items()}


def _labels(*entries: tuple[int, str, str, tuple[int, int, int]]) -> tuple[Label, ...]:
    return tuple(Label(*entry) for entry in entries)


# Colours: the classic BraTS palette (red core, green oedema, yellow enhancing)
# and distinct hues for the labels added since 2024.
_RED, _GREEN, _YELLOW = (220, 50, 47), (60, 180, 75), (255, 215, 0)
_BLUE, _PURPLE, _CYAN = (0, 130, 200), (145, 30, 180), (70, 240, 240)

_GLIOMA_2020 = _labels((1, "NCR", "Necrotic / non-enhancing core", _RED),
                       (2, "ED", "Peritumoural oedema", _GREEN),
                       (4, "ET", "Enhancing tumour", _YELLOW))
_GLIOMA_2023 = _labels((1, "NETC", "Non-enhancing tumour core", _RED),
                       (2, "SNFH", "Surrounding FLAIR hyperintensity", _GREEN),
                       (3, "ET", "Enhancing tumour", _YELLOW))
_POST_TREATMENT = _GLIOMA_2023 + _labels((4, "RC", "Resection cavity", _BLUE))
_PED_2024 = _labels((1, "ET", "Enhancing tumour", _YELLOW),
                    (2, "NETC", "Non-enhancing tumour core", _RED),
                    (3, "CC", "Cystic component", _PURPLE),
                    (4, "ED", "Oedema", _GREEN))
_GTV = _labels((1, "GTV", "Gross tumour volume", _CYAN))

_FOUR_2020 = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}
_FOUR_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}

SEED_BOX = {"mode": "fixed", "box": ((48, 192), (48, 192), (5, 149))}  # 144^3 on 240x240x155: the seeds' recipe
# 160x192x160 around the brain's bounding box, one shape for every record (holds an adult brain on any 1 mm
# grid): --config.crop.mode=brain.
BRAIN_BOX = {"mode": "brain", "size": (160, 192, 160)}
# Every challenge's default: the brain's bounding box + 8 voxels, each axis a multiple of 16, a shape per
# patient, as nnU-Net crops (keeps every tumour voxel in the brain; the seeds' box cut tumour at the brain's
# edge in about half of a hard cohort's patients).  configs/preprocess/default.py says why these numbers.
BBOX_CROP = {"mode": "bbox", "margin": 8, "multiple": 16, "min_size": (64, 64, 64)}


def _lesions(dilation: int, min_volume_mm3: float, regions) -> dict[str, LesionRule]:
    return {region: LesionRule(dilation, min_volume_mm3) for region in regions}


def _modern(cohort: str, timepoint: str = "000") -> Naming:
    """``BraTS-<COHORT>-<5 digits>-<3 digits>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz``."""
    return Naming(patient_dir=rf"BraTS-{cohort}-\d{{5}}-\d{{3}}", separator="-", tokens=_FOUR_2023,
                  id_format=f"BraTS-{cohort}-{{index:05d}}-{timepoint}")


_WT_TC_ET_2023 = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}

_ENTRIES = (
    Challenge(
        name="brats2020", title="BraTS 2020 (adult glioma)",
        naming=Naming(patient_dir=r"BraTS20_(Training|Validation)_\d+", separator="_", tokens=_FOUR_2020,
                      id_format="BraTS20_Training_{index:03d}", grade_table="name_mapping.csv",
                      misnamed_seg_globs=("*_Segm.nii", "*_Segm.nii.gz", "*seg*.nii*")),
        label_convention="brats2020", labels=_GLIOMA_2020,
        regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
        grid=SRI24, crop=BBOX_CROP,
    ),
    Challenge(
        name="brats2021", title="BraTS 2021 (adult glioma)",
        naming=Naming(patient_dir=r"BraTS2021_\d+", separator="_", tokens=_FOUR_2020,
                      id_format="BraTS2021_{index:05d}"),
        label_convention="brats2020", labels=_GLIOMA_2020,
        regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
        grid=SRI24, crop=BBOX_CROP,
    ),
    Challenge(
        name="brats2023_gli", title="BraTS 2023 GLI (adult glioma, pre-treatment)",
        naming=_modern("GLI"), label_convention="brats2023", labels=_GLIOMA_2023,
        regions=_WT_TC_ET_2023, grid=SRI24, crop=BBOX_CROP,
        lesion_rules=_lesions(3, 50, ("WT", "TC", "ET")), lesion_penalty_mm=374,
    ),
    Challenge(
        name="brats2024_gli", title="BraTS 2024/2025 GLI (adult glioma, post-treatment)",
        naming=_modern("GLI", "100"), label_convention="brats2024_post", labels=_POST_TREATMENT,
        regions={**_WT_TC_ET_2023, "NETC": (1,), "SNFH": (2,), "RC": (4,)},
        grid=MNI152, crop=BBOX_CROP,
        lesion_rules={**_lesions(3, 20, ("WT", "TC", "SNFH")), "ET": LesionRule(3, 10),
                      **_lesions(5, 20, ("NETC", "RC"))},
        lesion_penalty_mm=337,
        lesion_joins=(LesionJoin("NETC", ("ET", "RC")), LesionJoin("ET", ("NETC", "RC")),
                      LesionJoin("RC", ("ET", "NETC")), LesionJoin("SNFH", ("ET", "RC", "NETC"))),
        notes="RC is not part of WT or TC; 2025 adds pre-treatment cases with the same labels",
    ),
    Challenge(
        name="brats2024_ssa", title="BraTS-Africa (SSA, adult glioma)",
        naming=_modern("SSA"), label_convention="brats2023", labels=_GLIOMA_2023,
        regions=_WT_TC_ET_2023, grid=SRI24, crop=BBOX_CROP,
        lesion_rules=_lesions(3, 50, ("WT", "TC", "ET")), lesion_penalty_mm=374,
        lesion_joins=(LesionJoin("ET", ("NETC",), LesionRule(3, 50)),),
    ),
    Challenge(
        name="brats2023_men", title="BraTS MEN (pre-operative meningioma)",
        naming=_modern("MEN"), label_convention="brats2023", labels=_GLIOMA_2023,
        regions=_WT_TC_ET_2023, grid=SRI24, crop=BBOX_CROP,
        lesion_rules=_lesions(1, 50, ("WT", "TC", "ET")), lesion_penalty_mm=374,
    ),
    Challenge(
        name="brats2024_men_rt", title="BraTS MEN-RT (meningioma radiotherapy, T1c only)",
        naming=Naming(patient_dir=r"BraTS-MEN-RT-\d{4}-\d", separator="_", tokens={"t1ce": "t1c", "seg": "gtv"},
                      id_format="BraTS-MEN-RT-{index:04d}-1"),
        label_convention="brats_gtv", labels=_GTV, regions={"GTV": (1,)},
        grid=NATIVE, crop=BBOX_CROP,
        lesion_rules=_lesions(1, 50, ("GTV",)), lesion_penalty_mm=PENALTY_DIAGONAL, lesion_prediction_unit="mm3",
        notes="native space: scans of any shape and spacing; preprocess with resample on. Lesion penalty: "
              "the volume's diagonal in voxels (BraTS-2024-Metrics metrics_MEN_RT.py, July 2024)",
    ),
    Challenge(
        name="brats2024_met", title="BraTS 2023/2024 MET (brain metastases)",
        naming=_modern("MET"), label_convention="brats2023", labels=_GLIOMA_2023,
        regions=_WT_TC_ET_2023, grid=SRI24, crop=BBOX_CROP,
        lesion_rules=_lesions(1, 2, ("WT", "TC", "ET")), lesion_penalty_mm=374,
        lesion_joins=(LesionJoin("ET", ("NETC",), LesionRule(1, 2)),),
    ),
    Challenge(
        name="brats2025_met", title="BraTS 2025 MET (brain metastases, with resection cavity)",
        naming=_modern("MET"), label_convention="brats2024_post", labels=_POST_TREATMENT,
        regions={**_WT_TC_ET_2023, "RC": (4,)}, grid=SRI24, crop=BBOX_CROP,
        lesion_rules=_lesions(1, 2, ("WT", "TC", "ET", "RC")), lesion_penalty_mm=PENALTY_DIAGONAL,
        lesion_joins=(LesionJoin("ET", ("NETC",), LesionRule(1, 2)),),
        notes="2025 additions are in native space co-registered to T1c: preprocess those with resample on. "
              "Lesion penalty: the volume's diagonal in voxels (BraTS-2024-Metrics metrics_MET.py, May 2025)",
    ),
    Challenge(
        name="brats2024_ped", title="BraTS 2024 PED (paediatric tumours)",
        naming=_modern("PED"), label_convention="brats2024_ped", labels=_PED_2024,
        regions={"WT": (1, 2, 3, 4), "TC": (1, 2, 3), "ET": (1,), "NETC": (2,), "CC": (3,), "ED": (4,)},
        grid=SRI24, crop=BBOX_CROP,
        lesion_rules=_lesions(5, 10, ("WT", "TC", "ET", "NETC", "CC", "ED")), lesion_penalty_mm=374,
    ),
    Challenge(
        name="brats2024_goat", title="BraTS GoAT (generalisability across tumours)",
        naming=_modern("GoAT"), label_convention="brats2023", labels=_GLIOMA_2023,
        regions=_WT_TC_ET_2023, grid=SRI24, crop=BBOX_CROP,
        lesion_rules=_lesions(3, 50, ("WT", "TC", "ET")), lesion_penalty_mm=374,
    ),
)

_REGISTRY: dict[str, Challenge] = {}
_CONVENTIONS: dict[str, tuple[Label, ...]] = {}
# Read-only live views: an entry added with register() shows up in both.
CHALLENGES: types.MappingProxyType = types.MappingProxyType(_REGISTRY)
CONVENTIONS: types.MappingProxyType = types.MappingProxyType(_CONVENTIONS)


def register(challenge: Challenge) -> Challenge:
    """Add a challenge to the registry: every package then discovers, encodes, trains,
    predicts and scores it.  Refuses a second entry of the same name, and a
    label convention another entry numbers differently."""
    if challenge.name in _REGISTRY:
        raise ValueError(f"challenge {challenge.name!r} is already registered")
    known = _CONVENTIONS.get(challenge.label_convention)
    if known is not None and [(lb.value, lb.key) for lb in known] != [(lb.value, lb.key) for lb in challenge.labels]:
        raise ValueError(f"convention {challenge.label_convention!r} is numbered otherwise by another challenge")
    _REGISTRY[challenge.name] = challenge
    _CONVENTIONS.setdefault(challenge.label_convention, challenge.labels)
    return challenge


def unregister(name: str) -> None:
    """Remove an entry (tests that show a new challenge working end to end clean up with it)."""
    removed = _REGISTRY.pop(name)
    if not any(c.label_convention == removed.label_convention for c in _REGISTRY.values()):
        _CONVENTIONS.pop(removed.label_convention, None)


for _entry in _ENTRIES:
    register(_entry)


def get(name: str) -> Challenge:
    """The registry entry ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown challenge {name!r}; known: {', '.join(_REGISTRY)}") from None


def by_convention(convention: str) -> Challenge:
    """The first challenge numbered in ``convention`` (for legends and class names)."""
    for challenge in _REGISTRY.values():
        if challenge.label_convention == convention:
            return challenge
    raise ValueError(f"unknown label convention {convention!r}; known: {', '.join(_CONVENTIONS)}")


# Numberings whose classes mean the same tissue: BraTS 2023 renamed 2020's
# labels (NCR -> NETC, ED -> SNFH) and moved enhancing tumour from 4 to 3.
_SAME_CLASSES = (frozenset({"brats2020", "brats2023"}),)


def same_classes(convention_a: str, convention_b: str) -> bool:
    """Whether a model trained in one numbering may write its classes in the other."""
    return convention_a == convention_b or any({convention_a, convention_b} <= group for group in _SAME_CLASSES)


def output_convention(model: Challenge, source_convention: str | None) -> str:
    """The numbering a prediction is written in: the source folder's own where the
    model's classes mean the same there (a 2020 model on a 2023 case writes ET as 3),
    otherwise the model's (a GLI 2024 model always writes RC as 4)."""
    if source_convention and same_classes(model.label_convention, source_convention):
        return source_convention
    return model.label_convention
