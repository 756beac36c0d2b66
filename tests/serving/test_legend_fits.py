"""Summary pictures (predict's PNG, the app's summary picture): legends stay inside the figure (issue 24)."""

from __future__ import annotations

import numpy as np
import pytest

from serving import pictures
from shared import challenges


def _every_class(challenge, shape=(24, 24, 24)):
    """Classes 0..k-1 in slabs, so every label's (long) name and a multi-digit count are drawn."""
    classes = np.zeros(shape, np.uint8)
    for cls in range(1, challenge.num_classes):
        classes[2:-2, 2:-2, 2 * cls:2 * cls + 2] = cls
    classes[0, 0, 0] = 1
    return classes


@pytest.mark.parametrize("name", list(challenges.CHALLENGES))
def test_the_legend_of_every_registry_entry_lies_inside_the_figure(name):
    challenge = challenges.get(name)
    classes = _every_class(challenge)
    fig = pictures.summary_figure(np.random.default_rng(0).random(classes.shape), classes, challenge,
                                  spacing=(9.0, 9.0, 9.0), title="BraTS-GLI-00000-000")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box, frame = legend.get_window_extent(renderer), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, (name, box)
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == len(challenge.labels)
    for ax in fig.axes:  # the slices start above the legend
        assert ax.get_window_extent(renderer).y0 >= box.y1 - 1, name


def test_one_voxel_is_singular():
    assert pictures.plural(1, "voxel") == "1 voxel" and pictures.plural(2048, "voxel") == "2,048 voxels"
    challenge = challenges.get("brats2020")
    classes = np.zeros((24, 24, 24), np.uint8)
    classes[5, 5, 5] = 1
    handles = pictures._legend_handles(classes, (1.0, 1.0, 1.0), challenge)
    assert handles[0].get_label().endswith("(1 voxel)") and handles[1].get_label().endswith("(0 voxels)")


def test_modality_names_are_the_cohorts_own():
    assert challenges.get("brats2024_gli").modality_names(("flair", "t1", "t1ce", "t2")) == ("t2f", "t1n", "t1c", "t2w")
    assert challenges.get("brats2020").modality_names() == ("flair", "t1", "t1ce", "t2")
