"""Offline cartoon avatar: a face whose mouth follows outgoing speech, drawn as raw video frames.

Knows nothing of WebRTC or HTTP. Everything that does not move (background, head, eyes in each
blink phase, eyebrows per state) is rendered once; a frame is a copy of the right cached base
plus a small anti-aliased mouth painted into its bounding box, in RGB or straight in YUV420p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent_bridge.interfaces import AvatarChoice
from agent_bridge.yuv import yuv420p, yuv_of

RGB = tuple[int, int, int]
RENDERED_AVATAR_ID = "rendered-default"  # the one face this renderer draws
STATES = ("speaking", "listening", "idle")


# Blink schedule: one blink per 4 s slot, starting 1-2 s into it, so gaps vary between 3 and 5 s.
_BLINK_SLOT_S = 4.0
_BLINK_OFFSET_S = 1.0
_BLINK_JITTER_S = 1.0
_BLINK_DURATION_S = 0.15

_STATE_DOT: dict[str, RGB] = {
    "speaking": (96, 196, 120),
    "listening": (88, 150, 230),
    "idle": (170, 176, 188),
}


@dataclass(frozen=True)
class AvatarLook:
    width: int = 320
    height: int = 240
    background: RGB = (206, 226, 240)
    skin: RGB = (246, 206, 170)
    eye: RGB = (52, 44, 56)
    mouth: RGB = (120, 40, 52)
    tongue: RGB = (232, 116, 120)
    cheek: RGB = (246, 150, 150)
    shirt: RGB = (92, 134, 196)
    hair: RGB = (104, 70, 54)

    def __post_init__(self) -> None:
        # YUV420p subsamples chroma 2x2, so both sides must be even.
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise ValueError(f"avatar size must be even and at least 32x32, got {self.width}x{self.height}")


def _shade(colour: RGB, amount: float) -> np.ndarray:
    """Lighten (amount > 0, towards white) or darken (amount < 0, towards black)."""
    c = np.asarray(colour, dtype=np.float32)
    return c + (255.0 - c) * amount if amount > 0 else c * (1.0 + amount)


def _ellipse_alpha(
    dy: np.ndarray, dx: np.ndarray, rx: float, ry_top: float, ry_bottom: float | None = None, lift: float = 0.0
) -> np.ndarray:
    """Anti-aliased coverage of an ellipse around (0, 0), from f / |grad f| as a pixel distance.

    `ry_bottom` gives the lower half its own radius; `lift` raises the left/right ends by that
    many pixels, bending the ellipse into a smile.
    """
    nx = dx / rx
    bend = lift * nx * nx
    yy = dy + bend
    ry = ry_top if ry_bottom is None else np.where(yy < 0, ry_top, ry_bottom)
    ny = yy / ry
    f = nx * nx + ny * ny - 1.0
    grad_y = ny / ry
    grad_x = nx / rx + grad_y * (2.0 * lift / rx) * nx  # chain rule through the bend
    dist = f / (2.0 * np.sqrt(grad_x * grad_x + grad_y * grad_y) + 1e-6)
    return np.clip(0.5 - dist, 0.0, 1.0)


class RenderedAvatar:
    @staticmethod
    def avatars() -> list[AvatarChoice]:
        return [AvatarChoice(RENDERED_AVATAR_ID, "Rendered face")]

    """Cartoon face frames; construction pre-renders every static variant, frames are cheap."""

    def __init__(self, look: AvatarLook | None = None) -> None:
        self.look = look = look or AvatarLook()
        w, h = look.width, look.height
        # Everything is designed on a 320x240 canvas and scaled uniformly to fit.
        self._scale = s = min(w / 320.0, h / 240.0)
        self._cx = w / 2.0
        self._cy = h / 2.0
        ys, xs = np.ogrid[0:h, 0:w]
        self._ys = ys.astype(np.float32)
        self._xs = xs.astype(np.float32)

        face = self._paint_face()
        self._rgb: dict[tuple[str, int], np.ndarray] = {}
        self._yuv: dict[tuple[str, int], np.ndarray] = {}
        for state in STATES:
            for lid in range(3):  # 0 open, 1 half closed, 2 closed
                img = face.copy()
                self._paint_eyes(img, state, lid)
                rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
                self._rgb[(state, lid)] = rgb
                self._yuv[(state, lid)] = yuv420p(rgb)

        # Mouth geometry, in output pixels.
        self._mouth_x, self._mouth_y = self._p(160, 158)
        self._mouth_rx = 30 * s
        self._mouth_lift = 6 * s
        self._mouth_colour = np.asarray(look.mouth, np.float32)
        self._tongue_colour = np.asarray(look.tongue, np.float32)
        self._mouth_yuv = yuv_of(look.mouth)
        self._tongue_yuv = yuv_of(look.tongue)

    # Static painting, constructor only.

    def _p(self, x: float, y: float) -> tuple[float, float]:
        """Design coordinates (320x240 canvas) -> output pixel centre."""
        s = self._scale
        return self._cx + (x - 160.0) * s, self._cy + (y - 120.0) * s

    def _ellipse(self, x: float, y: float, rx: float, ry: float) -> np.ndarray:
        px, py = self._p(x, y)
        s = self._scale
        return _ellipse_alpha(self._ys - py, self._xs - px, rx * s, ry * s)

    @staticmethod
    def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray | RGB) -> None:
        a = alpha[..., None]
        img += (np.asarray(colour, np.float32) - img) * a

    def _paint_face(self) -> np.ndarray:
        look = self.look
        h, w = look.height, look.width
        # Soft vertical gradient: a flat fill looks like a placeholder.
        top, bottom = _shade(look.background, 0.25), _shade(look.background, -0.06)
        ramp = (self._ys / max(h - 1, 1))[..., None]
        img = np.broadcast_to(top + (bottom - top) * ramp, (h, w, 3)).astype(np.float32)

        skin_shadow = _shade(look.skin, -0.12)
        outline = _shade(look.skin, -0.35)
        self._blend(img, self._ellipse(160, 266, 122, 58), look.shirt)
        self._blend(img, self._ellipse(160, 214, 24, 26), skin_shadow)  # neck
        for side in (-1, 1):  # ears sit behind the head
            self._blend(img, self._ellipse(160 + side * 85, 118, 17, 19), outline)
            self._blend(img, self._ellipse(160 + side * 85, 118, 15, 17), look.skin)
            self._blend(img, self._ellipse(160 + side * 87, 119, 7, 9), skin_shadow)
        self._blend(img, self._ellipse(160, 112, 88, 98), outline)
        self._blend(img, self._ellipse(160, 112, 86, 96), look.skin)
        # Hair: a cap between the head outline and a lower face oval, cut off above the ears.
        cap = self._ellipse(160, 110, 89, 99) * (1.0 - self._ellipse(160, 138, 84, 86))
        sideburn_end = self._p(0, 112)[1]
        cap *= np.clip((sideburn_end - self._ys) / (4.0 * self._scale), 0.0, 1.0)
        self._blend(img, cap, look.hair)
        for side in (-1, 1):
            self._blend(img, self._ellipse(160 + side * 50, 140, 15, 9) * 0.45, look.cheek)
        self._blend(img, self._ellipse(160, 124, 7, 5), skin_shadow)  # nose
        return img

    def _paint_eyes(self, img: np.ndarray, state: str, lid: int) -> None:
        look = self.look
        s = self._scale
        # Eyebrows carry the state: raised and attentive when listening, relaxed when idle.
        brow_y, brow_arch = {"speaking": (77.0, 5.0), "listening": (72.0, 6.5), "idle": (81.0, 3.5)}[state]
        for side in (-1, 1):
            ex, ey = 160 + side * 32, 100.0
            brow = self._ellipse(ex, brow_y, 14, brow_arch) * (1.0 - self._ellipse(ex, brow_y + 3.2, 15, brow_arch))
            self._blend(img, brow, _shade(look.eye, 0.15))
            if lid == 2:  # closed: a lower-lid curve
                line = self._ellipse(ex, ey + 2, 10, 4) * (1.0 - self._ellipse(ex, ey - 1.0, 11, 4))
                self._blend(img, line, look.eye)
                continue
            eye = self._ellipse(ex, ey, 9, 12)
            if lid == 1:  # half closed: the lid hides the top half
                lid_y = self._p(0, ey - 1)[1]
                eye = eye * np.clip(self._ys - lid_y + 0.5, 0.0, 1.0)
            self._blend(img, eye, look.eye)
            if lid == 0:
                self._blend(img, self._ellipse(ex + 3, ey - 4, 3.2, 3.2), (255, 255, 255))
        # Small state dot in the top-right corner.
        dot_x, dot_y = look.width - 14 * s, 14 * s
        ring = _ellipse_alpha(self._ys - dot_y, self._xs - dot_x, 7 * s, 7 * s)
        self._blend(img, ring, (255, 255, 255))
        dot = _ellipse_alpha(self._ys - dot_y, self._xs - dot_x, 5 * s, 5 * s)
        self._blend(img, dot, _STATE_DOT[state])

    # Per frame.

    @staticmethod
    def _lid(t: float) -> int:
        """0 open, 1 half closed, 2 closed; deterministic in t."""
        slot = math.floor(t / _BLINK_SLOT_S)
        # Knuth multiplicative hash: a fixed, well-spread offset per slot, no RNG state.
        jitter = ((slot * 2654435761) & 0xFFFFFFFF) / 2**32
        phase = t - slot * _BLINK_SLOT_S - (_BLINK_OFFSET_S + jitter * _BLINK_JITTER_S)
        if phase < 0.0 or phase >= _BLINK_DURATION_S:
            return 0
        # Lids close and open through a half-closed frame, which reads as motion at 25-30 fps.
        edge = _BLINK_DURATION_S * 0.25
        return 1 if phase < edge or phase >= _BLINK_DURATION_S - edge else 2

    def is_blinking(self, t: float) -> bool:
        return self._lid(t) != 0

    def _mouth(self, mouth_open: float) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Mouth coverage and tongue share in a 2-pixel-aligned box: (y0, x0, alpha, tongue)."""
        o = min(max(float(mouth_open), 0.0), 1.0)
        s = self._scale
        rx = self._mouth_rx * (1.0 - 0.15 * o)  # a wide-open mouth gets rounder
        ry_top = (1.3 + 9.0 * o) * s
        ry_bottom = (1.8 + 28.0 * o) * s
        lift = self._mouth_lift * (1.0 - 0.3 * o)
        # Even-aligned so the same box maps onto whole chroma samples.
        y0 = int(self._mouth_y - lift - ry_top - 2) & ~1
        y1 = (int(self._mouth_y + ry_bottom + 3) + 1) & ~1
        x0 = int(self._mouth_x - rx - 2) & ~1
        x1 = (int(self._mouth_x + rx + 3) + 1) & ~1
        h, w = self.look.height, self.look.width
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        dy = self._ys[y0:y1] - self._mouth_y
        dx = self._xs[:, x0:x1] - self._mouth_x
        alpha = _ellipse_alpha(dy, dx, rx, ry_top, ry_bottom, lift)
        tongue_ry = ry_bottom * 0.5
        if tongue_ry > 3.0 * s:
            tongue = _ellipse_alpha(dy - ry_bottom, dx, rx * 0.55, tongue_ry)
        else:
            tongue = np.zeros_like(alpha)
        return y0, x0, alpha, tongue

    def _base_key(self, state: str, t: float) -> tuple[str, int]:
        if state not in _STATE_DOT:
            raise ValueError(f"unknown avatar state {state!r}; expected one of {STATES}")
        return state, self._lid(t)

    def frame(self, mouth_open: float, state: str, t: float) -> np.ndarray:
        """RGB uint8 (height, width, 3); for tests and screenshots, frame_yuv420p is the fast path."""
        out = self._rgb[self._base_key(state, t)].copy()
        y0, x0, alpha, tongue = self._mouth(mouth_open)
        box = out[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]]
        inside = self._mouth_colour + (self._tongue_colour - self._mouth_colour) * tongue[..., None]
        a = alpha[..., None]
        box[...] = box * (1.0 - a) + inside * a + 0.5
        return out

    def frame_yuv420p(self, mouth_open: float, state: str, t: float) -> np.ndarray:
        """YUV420p uint8 (height*3//2, width), ready for av.VideoFrame.from_ndarray(..., format="yuv420p")."""
        out = self._yuv[self._base_key(state, t)].copy()
        h, w = self.look.height, self.look.width
        y0, x0, alpha, tongue = self._mouth(mouth_open)
        bh, bw = alpha.shape
        # Weights of the two paint colours per pixel; the base keeps the rest.
        w_tongue = alpha * tongue
        w_mouth = alpha - w_tongue
        luma = out[y0 : y0 + bh, x0 : x0 + bw]
        my, ty = self._mouth_yuv[0], self._tongue_yuv[0]
        luma[...] = luma * (1.0 - alpha) + w_mouth * my + w_tongue * ty + 0.5
        # Chroma: average the weights over each 2x2 block, matching the subsampling of the base.
        ch, cw = bh // 2, bw // 2
        wm = w_mouth.reshape(ch, 2, cw, 2).mean(axis=(1, 3))
        wt = w_tongue.reshape(ch, 2, cw, 2).mean(axis=(1, 3))
        keep = 1.0 - wm - wt
        planes = out[h:].reshape(2, h // 2, w // 2)
        cy0, cx0 = y0 // 2, x0 // 2
        for i in (1, 2):
            plane = planes[i - 1, cy0 : cy0 + ch, cx0 : cx0 + cw]
            plane[...] = plane * keep + wm * self._mouth_yuv[i] + wt * self._tongue_yuv[i] + 0.5
        return out
