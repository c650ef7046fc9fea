"""RGB to planar YUV420p, the layout VP8 encodes from, with the matrix libswscale uses by default."""

from __future__ import annotations

import numpy as np

# BT.601 limited range, the matrix libswscale uses for rgb24 -> yuv420p by default.
_RGB_TO_YUV = np.array(
    [
        [0.256788, 0.504129, 0.097906],
        [-0.148223, -0.290993, 0.439216],
        [0.439216, -0.367788, -0.071427],
    ],
    dtype=np.float32,
)
# Chroma for a 2x2 block from its two row-summed pixels laid side by side (r0 g0 b0 r1 g1 b1):
# averaging and converting in one small matmul.
_CHROMA_FROM_PAIRS = np.ascontiguousarray(np.vstack([_RGB_TO_YUV[1:].T] * 2).T * 0.25)
_SCRATCH_BYTES = 120 * 1024


def yuv420p(frame_rgb: np.ndarray) -> np.ndarray:
    """RGB (h, w, 3) uint8 -> planar YUV420p (h*3//2, w) uint8, the layout av.VideoFrame.from_ndarray takes."""
    height, width, _ = frame_rgb.shape
    out = np.empty((height * 3 // 2, width), dtype=np.uint8)
    luma_out = out[:height]
    u_out, v_out = out[height:].reshape(2, height // 2, width // 2)
    # Work in bands whose float32 scratch stays under glibc's 128 KiB mmap threshold: a whole
    # 320x240 frame at once costs ~5x more in fresh-page faults than in arithmetic.
    band = max(2, (_SCRATCH_BYTES // (width * 12)) & ~1)
    for top in range(0, height, band):
        rows = min(band, height - top)
        pixels = frame_rgb[top : top + rows].reshape(-1, 3).astype(np.float32)
        luma = pixels @ _RGB_TO_YUV[0]
        luma += 16.5  # +0.5 turns the truncating uint8 store into rounding
        luma_out[top : top + rows] = luma.reshape(rows, width)
        pair_rows = pixels.reshape(rows // 2, 2, width * 3)
        pairs = (pair_rows[:, 0] + pair_rows[:, 1]).reshape(-1, 6)
        chroma = (pairs @ _CHROMA_FROM_PAIRS.T).reshape(rows // 2, width // 2, 2)
        chroma += 128.5
        u_out[top // 2 : (top + rows) // 2] = chroma[..., 0]
        v_out[top // 2 : (top + rows) // 2] = chroma[..., 1]
    return out


def yuv_of(colour: tuple[int, int, int]) -> np.ndarray:
    """An RGB colour's Y, U, V (floats, limited range)."""
    return _RGB_TO_YUV @ np.asarray(colour, dtype=np.float32) + np.array([16.0, 128.0, 128.0], np.float32)
