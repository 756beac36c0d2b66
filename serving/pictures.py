"""Pictures of a segmentation: orthogonal slices with an overlay, and an axial fly-through.

A number says how good a segmentation is; a picture says where it went
wrong.  The predictor writes one PNG and one GIF beside every NIfTI, and a
Streamlit slice browser reuses :func:`overlay_rgb`, so the colouring is pure
numpy (fast for every slider move) and the figures use matplotlib's Agg
canvas directly: no pyplot global state, no display, safe in worker threads.
No TensorFlow here.

Orientation.  Arrays are assumed axis-aligned in (x, y, z) order, as BraTS
and this project store them; the sign of each axis comes from the NIfTI
affine, by default the BraTS one (``diag(-1, -1, 1)``: array axes run towards
patient left, posterior, superior).  Every view is shown the way clinical
viewers such as ITK-SNAP show it (radiological convention): axial with
anterior up and the patient's right on the image's left; coronal with
superior up and the patient's right on the left; sagittal with superior up
and anterior on the left.  Other orientations: reorient with nibabel first.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image, ImageDraw, ImageFont

from shared.challenges import Challenge
from shared.metrics import voxel_ml

# The BraTS affine's axis directions (+1: index grows towards R, A or S).
BRATS_AXIS_SIGNS = (-1, -1, 1)

# view -> (axis held fixed, axis down the rows, axis along the columns).
# Rows and columns always run towards patient left, posterior or inferior,
# which gives the radiological layout described in the module docstring.
VIEWS: dict[str, tuple[int, int, int]] = {
    "axial": (2, 1, 0),
    "coronal": (1, 2, 0),
    "sagittal": (0, 2, 1),
}


def legend_entries(challenge: Challenge) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(class, legend name, RGB) for each label of the challenge, in class order.

    Names and colours come from the registry, so a GLI 2024 resection cavity
    is drawn and named as one, never as enhancing tumour.
    """
    return [(cls, f"{label.title} ({label.key}, label {label.value})", label.colour)
            for cls, label in enumerate(challenge.labels, start=1)]


def tumour_centre(classes: np.ndarray) -> tuple[int, int, int]:
    """Centre of mass of the tumour voxels (rounded); the volume's centre without tumour."""
    classes = np.asarray(classes)
    where = np.nonzero(classes > 0)
    if where[0].size == 0:
        return tuple(int(dim // 2) for dim in classes.shape)  # type: ignore[return-value]
    return tuple(int(round(float(axis.mean()))) for axis in where)  # type: ignore[return-value]


def _grey(image_slice: np.ndarray) -> np.ndarray:
    """Slice windowed to the 1st-99th percentile of its non-zero pixels, as float 0..255.

    BraTS is skull-stripped with the background exactly 0 (also after
    z-scoring), so the window is taken over the brain alone and the background
    is drawn black; otherwise the air would decide the contrast.
    """
    image = np.nan_to_num(np.asarray(image_slice, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    brain = image != 0
    grey = np.zeros(image.shape, dtype=np.float32)
    if not brain.any():
        return grey
    lo, hi = np.percentile(image[brain], [1, 99])
    if hi > lo:
        grey[brain] = np.clip((image[brain] - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
    else:
        grey[brain] = 255.0  # a constant brain: show where it is
    return grey


def _colour_tables(challenge: Challenge, show: Sequence[int], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-class RGB and opacity lookup tables (background and hidden classes: opacity 0)."""
    k = challenge.num_classes
    colours = np.zeros((k, 3), dtype=np.float32)
    opacity = np.zeros(k, dtype=np.float32)
    for cls in show:
        if not 1 <= cls < k:
            raise ValueError(f"cannot show class {cls}; {challenge.name}'s tumour classes are 1..{k - 1}")
        colours[cls] = challenge.labels[cls - 1].colour
        opacity[cls] = alpha
    return colours, opacity


def overlay_rgb(image_slice: np.ndarray, class_slice: np.ndarray, challenge: Challenge, show=None,
                alpha: float = 0.45) -> np.ndarray:
    """uint8 HxWx3: the slice in grey with the classes in ``show`` (default all) blended in their colours.

    Two table lookups and one blend over the whole slice, so it stays fast at
    any size.  Class values outside the challenge's classes are left uncoloured.
    """
    image_slice, class_slice = np.asarray(image_slice), np.asarray(class_slice)
    if image_slice.ndim != 2 or image_slice.shape != class_slice.shape:
        raise ValueError(f"need two 2-D slices of one shape, got image {image_slice.shape} and classes {class_slice.shape}")
    show = range(1, challenge.num_classes) if show is None else show
    colours, opacity = _colour_tables(challenge, show, float(alpha))
    cls = class_slice.astype(np.int64, copy=False)
    cls = np.where((cls >= 0) & (cls < challenge.num_classes), cls, 0)
    grey = _grey(image_slice)[..., None]
    weight = opacity[cls][..., None]
    rgb = grey + weight * (colours[cls] - grey)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _axis_signs(affine) -> tuple[int, int, int]:
    """+1/-1 per array axis: whether its index grows towards R, A, S (BraTS default)."""
    if affine is None:
        return BRATS_AXIS_SIGNS
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    signs = []
    for axis in range(3):
        own = directions[axis, axis]
        dominant = directions[np.argmax(np.abs(directions[:, axis])), axis]
        signs.append(1 if (own if own != 0 else dominant) > 0 else -1)
    return tuple(signs)  # type: ignore[return-value]


def _view_slice(array: np.ndarray, view: str, index: int, signs) -> np.ndarray:
    """One 2-D slice of ``array`` laid out for display (see VIEWS)."""
    fixed, row, col = VIEWS[view]
    plane = np.take(array, index, axis=fixed)  # remaining axes in ascending order
    if row > col:
        plane = plane.T
    if signs[row] > 0:  # rows must run towards posterior/inferior
        plane = plane[::-1, :]
    if signs[col] > 0:  # columns must run towards patient left/posterior
        plane = plane[:, ::-1]
    return plane


def _check_volumes(volume: np.ndarray, classes: np.ndarray) -> None:
    if volume.ndim != 3 or volume.shape != classes.shape:
        raise ValueError(
            f"need a 3-D image and a class volume of the same shape, got {volume.shape} and {classes.shape}"
            " (pick one channel of a multi-channel image)"
        )


def orthogonal_slices(volume: np.ndarray, classes: np.ndarray, centre, affine=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Axial, coronal and sagittal (image, classes) slices through ``centre``, display-oriented."""
    volume, classes = np.asarray(volume), np.asarray(classes)
    _check_volumes(volume, classes)
    centre = tuple(int(np.clip(c, 0, dim - 1)) for c, dim in zip(centre, volume.shape))
    signs = _axis_signs(affine)
    return {
        view: (_view_slice(volume, view, centre[fixed], signs), _view_slice(classes, view, centre[fixed], signs))
        for view, (fixed, _, _) in VIEWS.items()
    }


def _legend_handles(classes: np.ndarray, spacing, challenge: Challenge) -> list[Patch]:
    """One coloured patch per tumour class, labelled with its volume in mL and voxels."""
    k = challenge.num_classes
    counts = np.bincount(np.clip(classes, 0, k).ravel().astype(np.int64), minlength=k + 1)
    per_voxel = voxel_ml(spacing)
    return [
        Patch(facecolor=np.asarray(rgb) / 255.0, edgecolor="white",
              label=f"{name}: {counts[cls] * per_voxel:.1f} mL ({plural(int(counts[cls]), 'voxel')})")
        for cls, name, rgb in legend_entries(challenge)
    ]


def plural(count: int, noun: str) -> str:
    """'1 voxel', '2,048 voxels'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _place_legend(fig: Figure, handles: list[Patch], fontsize: float = 10) -> None:
    """The legend below the slices, in as many columns (3 at most) as fit across the figure.

    GLI 2024's class names are long: three columns of them run off both edges of a 12-inch
    figure.  Fewer columns make the legend taller, so the slices' bottom margin grows to match.
    """
    renderer = fig.canvas.get_renderer()
    for ncol in range(min(3, len(handles)), 0, -1):
        legend = fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, labelcolor="white",
                            fontsize=fontsize, bbox_to_anchor=(0.5, 0.0))
        box = legend.get_window_extent(renderer)
        if box.width <= fig.bbox.width * 0.98 or ncol == 1:
            break
        legend.remove()
    if box.width > fig.bbox.width * 0.98 and fontsize > 6:  # even one column is too wide: smaller type
        legend.remove()
        return _place_legend(fig, handles, fontsize - 1)
    fig.subplots_adjust(bottom=min(0.6, box.height / fig.bbox.height + 0.02))


def _write(path, data: bytes) -> None:
    """Write a local file, creating its folder."""
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def summary_figure(volume: np.ndarray, classes: np.ndarray, challenge: Challenge, spacing=(1.0, 1.0, 1.0),
                   title: str = "", affine=None, dpi: int = 100) -> Figure:
    """The figure :func:`summary_png` draws: three slices through the tumour's centre and the legend."""
    volume, classes = np.asarray(volume), np.asarray(classes)
    _check_volumes(volume, classes)
    centre = tumour_centre(classes)
    slices = orthogonal_slices(volume, classes, centre, affine)
    fig = Figure(figsize=(12, 4.8), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    for ax, (view, (image, cls)) in zip(fig.subplots(1, 3), slices.items()):
        fixed, row, col = VIEWS[view]
        ax.imshow(overlay_rgb(image, cls, challenge), aspect=float(spacing[row]) / float(spacing[col]), interpolation="nearest")
        ax.set_title(f"{view} (slice {centre[fixed]})", color="white", fontsize=11)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, color="white", fontsize=13)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.12, wspace=0.03)
    _place_legend(fig, _legend_handles(classes, spacing, challenge))
    return fig


def summary_png(volume: np.ndarray, classes: np.ndarray, challenge: Challenge, spacing=(1.0, 1.0, 1.0), path=None,
                title: str = "", affine=None, dpi: int = 100) -> bytes:
    """PNG of the three orthogonal slices through the tumour's centre, with overlay and legend.

    Pixels are drawn at their physical aspect ratio (from ``spacing``), so an
    anisotropic scan is not squashed.  Returns the PNG bytes; writes them to
    ``path`` as well when given.
    """
    fig = summary_figure(volume, classes, challenge, spacing, title, affine, dpi)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor())
    data = buffer.getvalue()
    if path is not None:
        _write(path, data)
    return data


def _frame_size(shape: tuple[int, int], spacing, max_size: int) -> tuple[int, int]:
    """(width, height) in pixels: physical aspect kept, longer side ``max_size``."""
    _, row, col = VIEWS["axial"]
    height, width = shape[0] * float(spacing[row]), shape[1] * float(spacing[col])
    scale = max_size / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _label(frame: Image.Image, text: str) -> None:
    """Slice number in the top-left corner, on a black box so it reads on any slice."""
    draw = ImageDraw.Draw(frame)
    font = ImageFont.load_default(size=max(10, frame.height // 18))
    left, top, right, bottom = draw.textbbox((4, 3), text, font=font)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255), font=font)


def flythrough_gif(volume: np.ndarray, classes: np.ndarray, challenge: Challenge, path=None, step: int = 1,
                   duration_ms: int = 80, max_size: int = 256, spacing=(1.0, 1.0, 1.0), affine=None) -> bytes:
    """Animated GIF of every ``step``-th axial slice with overlay, each labelled with its index.

    Frames are scaled so the longer side is ``max_size`` pixels at the
    physical aspect ratio; the label also keeps consecutive frames distinct,
    so Pillow never merges them and the frame count is ``ceil(depth / step)``.
    Returns the GIF bytes; writes them to ``path`` as well when given.
    """
    volume, classes = np.asarray(volume), np.asarray(classes)
    _check_volumes(volume, classes)
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}")
    signs, depth = _axis_signs(affine), volume.shape[2]
    frames = []
    for z in range(0, depth, step):
        rgb = overlay_rgb(_view_slice(volume, "axial", z, signs), _view_slice(classes, "axial", z, signs), challenge)
        size = _frame_size(rgb.shape[:2], spacing, max_size)
        resample = Image.Resampling.NEAREST if size[0] >= rgb.shape[1] else Image.Resampling.BILINEAR
        frame = Image.fromarray(rgb).resize(size, resample)
        _label(frame, f"axial {z}/{depth - 1}")
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    data = buffer.getvalue()
    if path is not None:
        _write(path, data)
    return data
