"""The fake avatar's video: frames whose pixels say which frame they are, made straight in yuv420p.

Layout of the luma plane for frame `index` (kept modulo 2**16):
- row of blocks 0: 16 square blocks, bit i of the index (most significant first), white for 1, black
  for 0. Big flat blocks survive VP8 at any sane bitrate.
- row of blocks 1: the same 16 bits inverted, so a misread block is caught instead of trusted.
- below: a smooth diagonal gradient with a black vertical bar that moves 8 px to the right a frame,
  so consecutive frames differ in a known place.
Chroma is flat grey. `read_pattern` decodes the index and compares the whole luma plane against
`pattern_frame(index)`, so a caller can check both "which frame" and "how damaged".
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BITS = 16
INDEX_MODULO = 1 << BITS
WHITE = 235
BLACK = 16
BAR_WIDTH = 16
BAR_STEP = 8


def block_size(width: int) -> int:
    """Side of one bit block: 32 px when the frame is wide enough (512 px and up), never under 8."""
    return max(8, min(32, (width // BITS) // 2 * 2))


def _check_size(width: int, height: int) -> None:
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
    if width < BITS * 8 or height < 4 * block_size(width):
        raise ValueError(f"{width}x{height} is too small for the pattern (min 128 wide)")


@lru_cache(maxsize=8)
def _base(width: int, height: int) -> np.ndarray:
    """The parts that never change: gradient luma, grey chroma. Read-only, copied per frame."""
    _check_size(width, height)
    cols = np.arange(width, dtype=np.int32)[None, :]
    rows = np.arange(height, dtype=np.int32)[:, None]
    frame = np.empty((height * 3 // 2, width), np.uint8)
    frame[:height] = (40 + cols * 120 // width + rows * 60 // height).astype(np.uint8)
    frame[height:] = 128
    frame.flags.writeable = False
    return frame


def _bar_x(index: int, width: int) -> int:
    return (index * BAR_STEP) % (width - BAR_WIDTH)


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame `index` as a (height*3//2, width) uint8 yuv420p array (Y rows, then U, then V)."""
    index %= INDEX_MODULO
    frame = _base(width, height).copy()
    bs = block_size(width)
    for bit in range(BITS):
        on = (index >> (BITS - 1 - bit)) & 1
        x = bit * bs
        frame[0:bs, x : x + bs] = WHITE if on else BLACK
        frame[bs : 2 * bs, x : x + bs] = BLACK if on else WHITE
    x = _bar_x(index, width)
    frame[2 * bs + 8 : height, x : x + BAR_WIDTH] = BLACK
    return frame


def read_pattern(y_plane: np.ndarray) -> tuple[int | None, float]:
    """(frame index, mean absolute luma error against that frame) for a decoded luma plane.

    The index is None (and the error infinite) when the bit blocks do not read back consistently,
    for instance when the frame is not one of ours or is badly damaged.
    """
    y = np.asarray(y_plane)
    height, width = y.shape
    try:
        _check_size(width, height)
    except ValueError:
        return None, float("inf")
    bs = block_size(width)
    quarter = bs // 4
    index = 0
    for bit in range(BITS):
        x = bit * bs
        # The block centres only: VP8 smears the edges between a white and a black block.
        top = float(y[quarter : bs - quarter, x + quarter : x + bs - quarter].mean())
        bottom = float(y[bs + quarter : 2 * bs - quarter, x + quarter : x + bs - quarter].mean())
        on, inverted = top > 128, bottom > 128
        if on == inverted:
            return None, float("inf")
        index = (index << 1) | int(on)
    expected = pattern_frame(index, width, height)[:height]
    error = float(np.abs(y.astype(np.int16) - expected.astype(np.int16)).mean())
    return index, error
