"""Overlay colours, orientation, PNG summary and GIF fly-through (serving/pictures.py)."""

import io

import numpy as np
import pytest
from PIL import Image

from serving import pictures
from shared import challenges

GLI = challenges.get("brats2023_gli")

SHAPE = (32, 32, 24)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def head_and_tumour():
    """A bright ball of 'brain' with a small three-class tumour off centre."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    radius = np.linalg.norm(grid - np.array(SHAPE) / 2, axis=-1)
    rng = np.random.default_rng(0)
    volume = np.where(radius < 11, 100 + 20 * rng.random(SHAPE), 0).astype(np.float32)
    classes = np.zeros(SHAPE, dtype=np.uint8)
    classes[16:24, 10:18, 8:16] = 2
    classes[18:22, 12:16, 10:14] = 3
    classes[19:21, 13:15, 11:13] = 1
    return volume, classes


def test_legend_names_and_colours_come_from_the_challenge():
    assert pictures.legend_entries(GLI) == [
        (1, "Non-enhancing tumour core (NETC, label 1)", (220, 50, 47)),
        (2, "Surrounding FLAIR hyperintensity (SNFH, label 2)", (60, 180, 75)),
        (3, "Enhancing tumour (ET, label 3)", (255, 215, 0)),
    ]
    gli24 = pictures.legend_entries(challenges.get("brats2024_gli"))
    assert gli24[3] == (4, "Resection cavity (RC, label 4)", (0, 130, 200))
    ped = pictures.legend_entries(challenges.get("brats2024_ped"))
    assert [entry[1].split(" (")[1] for entry in ped] == ["ET, label 1)", "NETC, label 2)", "CC, label 3)",
                                                          "ED, label 4)"]


def test_overlay_keeps_background_grey_and_colours_enhancing_yellow():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(20, 30)).astype(np.float32)
    classes = np.zeros((20, 30), dtype=np.uint8)
    classes[5, 7] = 3
    rgb = pictures.overlay_rgb(image, classes, GLI)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    untouched = classes == 0
    assert (rgb[untouched, 0] == rgb[untouched, 1]).all() and (rgb[untouched, 1] == rgb[untouched, 2]).all()
    grey = pictures.overlay_rgb(image, classes, GLI, show=())[5, 7].astype(int)
    r, g, b = rgb[5, 7].astype(int)
    assert r > g > b and r > grey[0]  # pulled towards (255, 215, 0)
    assert b == pytest.approx(grey[2] * (1 - 0.45), abs=1)


def test_overlay_show_nothing_is_pure_grey_windowed_to_percentiles():
    image = np.tile(np.arange(1, 101, dtype=np.float32), (4, 1))
    classes = np.full(image.shape, 2, dtype=np.uint8)
    rgb = pictures.overlay_rgb(image, classes, GLI, show=())
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255  # 1st and 99th percentile saturate
    assert pictures.overlay_rgb(np.zeros((3, 3)), np.zeros((3, 3), dtype=np.uint8), GLI).max() == 0


def test_overlay_refuses_mismatched_slices():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        pictures.overlay_rgb(np.zeros((4, 5)), np.zeros((5, 4)), GLI)


def test_tumour_centre_of_a_cube_and_of_nothing():
    classes = np.zeros(SHAPE, dtype=np.uint8)
    classes[4:9, 10:15, 2:7] = 2
    assert pictures.tumour_centre(classes) == (6, 12, 4)
    assert pictures.tumour_centre(np.zeros(SHAPE)) == (16, 16, 12)


@pytest.mark.parametrize("affine, front", [(None, 0), (np.eye(4), -1)])
def test_views_are_radiological_with_anterior_and_superior_up(affine, front):
    """BraTS arrays (default affine) run towards patient left and posterior, RAS arrays the other way.

    ``front`` is the array index that is anterior along axis 1 and the patient's right along axis 0.
    """
    volume = np.zeros(SHAPE, dtype=np.float32)
    right, anterior = front % SHAPE[0], front % SHAPE[1]
    volume[10, anterior, 5] = 1.0  # anterior marker
    volume[10, 16, SHAPE[2] - 1] = 2.0  # superior marker
    volume[right, 16, 5] = 3.0  # marker on the patient's right
    views = {name: image for name, (image, _) in
             pictures.orthogonal_slices(volume, np.zeros(SHAPE, np.uint8), (10, 16, 5), affine).items()}
    assert views["axial"].shape == (SHAPE[1], SHAPE[0])
    assert views["axial"][0].max() == 1.0  # anterior up
    assert views["axial"][:, 0].max() == 3.0  # patient's right on the image's left
    assert views["coronal"][0].max() == 2.0 and views["sagittal"][0].max() == 2.0  # superior up
    assert views["sagittal"][:, 0].max() == 1.0  # anterior on the left


def test_summary_png_decodes(tmp_path):
    volume, classes = head_and_tumour()
    path = tmp_path / "out" / "summary.png"
    data = pictures.summary_png(volume, classes, GLI, (1.0, 1.0, 2.0), path=path, title="synthetic")
    assert data.startswith(PNG_SIGNATURE) and path.read_bytes() == data
    image = Image.open(io.BytesIO(data))
    assert image.width > 400 and image.height > 150
    assert np.asarray(image.convert("RGB")).std() > 5  # not a blank canvas


def test_flythrough_has_one_frame_per_step(tmp_path):
    volume, classes = head_and_tumour()
    for step in (1, 5):
        path = tmp_path / f"fly{step}.gif"
        data = pictures.flythrough_gif(volume, classes, GLI, path=path, step=step, max_size=64)
        gif = Image.open(io.BytesIO(data))
        assert data[:6] == b"GIF89a" and path.read_bytes() == data
        assert gif.n_frames == len(range(0, SHAPE[2], step)) and max(gif.size) == 64


def test_no_tumour_still_draws():
    volume, _ = head_and_tumour()
    nothing = np.zeros(SHAPE, dtype=np.uint8)
    assert pictures.summary_png(volume, nothing, GLI).startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(pictures.flythrough_gif(volume, nothing, GLI, step=4))).n_frames == 6
