"""Synthetic anatomy for the demo studies: HU maps for CT, 12-bit values for DX."""

from __future__ import annotations

import numpy as np

FloatGrid = np.ndarray


def grid(rows: int, cols: int, spacing: float) -> tuple[FloatGrid, FloatGrid]:
    """Patient x (right->left, one row) and y (anterior->posterior, one column) in mm."""

    def axis(n: int) -> np.ndarray:
        return (np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(spacing)

    return axis(cols)[np.newaxis, :], axis(rows)[:, np.newaxis]


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """HU to the int16 stored values of ``ct_image`` (intercept -1024, slope 1)."""
    return np.clip(np.rint(hu) + 1024, -1024, 3071).astype(np.int16)


def _inside(x: FloatGrid, y: FloatGrid, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def head_slice(x: FloatGrid, y: FloatGrid, t: float, *, bleed: bool) -> np.ndarray:
    """Axial head at relative height t (0 = skull base level, 1 = vertex)."""
    s = float(np.sqrt(max(0.08, 1.0 - (0.95 * t) ** 2)))
    a, b = 72.0 * s, 92.0 * s
    hu = np.full(np.broadcast_shapes(x.shape, y.shape), -1000.0, dtype=np.float32)
    hu[_inside(x, y, 0, 0, a + 4, b + 4)] = 30.0  # scalp
    hu[_inside(x, y, 0, 0, a, b)] = 1000.0  # skull
    brain = _inside(x, y, 0, 0, a - 7, b - 7)
    hu[brain] = 35.0
    hu[brain & _inside(x, y, 0, 0, (a - 7) * 0.75, (b - 7) * 0.8)] = 28.0  # white matter
    if 0.2 < t < 0.55:  # lateral ventricles
        for cx in (-9.0, 9.0):
            hu[_inside(x, y, cx, -8.0, 5.0 * s, 22.0 * s)] = 5.0
    if bleed and 0.25 < t < 0.5:  # right basal ganglia haemorrhage (image left)
        hu[_inside(x, y, -24.0, 0.0, 11.0, 15.0)] = 65.0
    return hu


def chest_ct_slice(x: FloatGrid, y: FloatGrid, t: float, *, contrast: bool) -> np.ndarray:
    """Axial chest; with contrast the aorta is bright and shows a dissection flap."""
    hu = np.full(np.broadcast_shapes(x.shape, y.shape), -1000.0, dtype=np.float32)
    hu[_inside(x, y, 0, 0, 160, 110)] = 40.0
    hu[_inside(x, y, 0, 0, 160, 110) & ~_inside(x, y, 0, 0, 148, 98)] = -90.0  # fat
    for cx in (-72.0, 72.0):
        hu[_inside(x, y, cx, -5, 55, 72 - 10 * t)] = -850.0
    hu[_inside(x, y, 0, 78, 18, 16)] = 700.0  # vertebral body
    hu[_inside(x, y, 0, 78, 10, 9)] = 250.0
    hu[_inside(x, y, 0, -88, 16, 7)] = 400.0  # sternum
    hu[_inside(x, y, 10, -10, 45, 38)] = 45.0  # heart / mediastinum
    aorta_hu = 320.0 if contrast else 40.0
    hu[_inside(x, y, 18, -35, 16, 16)] = aorta_hu  # ascending
    hu[_inside(x, y, 22, 55, 13, 13)] = aorta_hu  # descending
    if contrast:
        hu[_inside(x, y, 22, 55, 13, 13) & (np.abs((x - 22) - 0.4 * (y - 55)) < 1.2)] = 60.0
    return hu


def chest_radiograph(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """PA chest, MONOCHROME2: lungs dark, mediastinum, spine, ribs and clavicles bright."""
    x, y = grid(rows, cols, 430.0 / max(rows, cols))

    def soft(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        e = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2
        return 1.0 / (1.0 + np.exp(np.clip((e - 1.0) * 12.0, -30, 30)))

    img = 250.0 + 1650.0 * soft(0, 30, 190, 240)
    lungs = soft(-80, -20, 70, 130) + soft(85, -20, 68, 125)
    img = img - 1050.0 * lungs
    img = img + 700.0 * soft(20, 45, 70, 75) + 500.0 * soft(0, 0, 22, 220)
    ribs = 0.5 + 0.5 * np.cos((y + 0.12 * np.abs(x)) * (2 * np.pi / 24.0))
    img = img + 260.0 * ribs * lungs
    img = img + 450.0 * (soft(-85, -150, 75, 9) + soft(85, -150, 75, 9))
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * 25.0
    return np.clip(img, 0, 4095).astype(np.uint16)
