"""EgoSynth rasteriser: vectorised numpy drawing of simple shapes, scene backgrounds, H.264 output.

Geometry and pixels come from the same primitives, so an annotated box is the exact extent of
what is drawn (`prim_extent`), and a metadata-only run (no pixels) gives the same boxes.

A primitive is a tuple in pixel units of the image it is drawn on (x right, y down, pixel (i, j)
covers [j, j+1) x [i, i+1) and is inside a shape when its centre is):
  ("r", cx, cy, a, b, ang, colour)          rectangle, half sides a, b, rotated by ang (radians)
  ("e", cx, cy, a, b, ang, colour)          ellipse, semi-axes a, b
  ("g", cx, cy, a, b, ang, colour, inner)   elliptic ring, hole = inner * (a, b)
  ("p", xs, ys, colour)                     convex polygon
Parts of objects, hands and fixtures use the same tuples in *local* units (fractions of the
frame width, centred on the thing's anchor) and are placed with `place`.
"""

from __future__ import annotations

import io
import math
import zlib
from fractions import Fraction
from functools import lru_cache

import numpy as np

# World coordinates: the frame at zoom 1 with the camera centred spans [0, 1] x [0, 1]. The
# static canvas (background + fixtures + distractors) covers [-MARGIN, 1 + MARGIN] on each axis,
# enough for the egomotion limits of the generator.
MARGIN = 0.2


# ---------------------------------------------------------------------------------------------
# Part constructors (local units; sizes are full widths/heights, angles in degrees)


def R(cx, cy, w, h, col, ang=0.0):
    return ("r", cx, cy, w / 2, h / 2, math.radians(ang), tuple(col))


def E(cx, cy, w, h, col, ang=0.0):
    return ("e", cx, cy, w / 2, h / 2, math.radians(ang), tuple(col))


def G(cx, cy, w, h, col, inner=0.6, ang=0.0):
    return ("g", cx, cy, w / 2, h / 2, math.radians(ang), tuple(col), inner)


def P(points, col):
    pts = np.asarray(points, dtype=np.float64)
    return ("p", tuple(pts[:, 0]), tuple(pts[:, 1]), tuple(col))


def place(parts, x: float, y: float, ang: float, scale: float, flip: bool = False) -> list[tuple]:
    """Local parts -> primitives: rotate by `ang` (radians), scale by `scale` (pixels per local
    unit), translate to (x, y) pixels. `flip` mirrors the parts left-right first."""
    c, s = math.cos(ang), math.sin(ang)
    out = []
    for p in parts:
        if p[0] == "p":
            xs = np.asarray(p[1]) * (-1.0 if flip else 1.0)
            ys = np.asarray(p[2])
            out.append(("p", x + scale * (c * xs - s * ys), y + scale * (s * xs + c * ys), p[3]))
        else:
            px = -p[1] if flip else p[1]
            pang = -p[5] if flip else p[5]
            q = (
                p[0],
                x + scale * (c * px - s * p[2]),
                y + scale * (s * px + c * p[2]),
                p[3] * scale,
                p[4] * scale,
                pang + ang,
                p[6],
            )
            out.append(q + p[7:])
    return out


def prim_extent(p) -> tuple[float, float, float, float]:
    """Exact continuous extent (x0, y0, x1, y1) of a primitive in pixels."""
    if p[0] == "p":
        xs, ys = p[1], p[2]
        return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))
    _, cx, cy, a, b, ang = p[:6]
    c, s = abs(math.cos(ang)), abs(math.sin(ang))
    if p[0] == "r":
        ex, ey = a * c + b * s, a * s + b * c
    else:
        ex, ey = math.sqrt((a * c) ** 2 + (b * s) ** 2), math.sqrt((a * s) ** 2 + (b * c) ** 2)
    return cx - ex, cy - ey, cx + ex, cy + ey


def _outline(p, n: int = 24) -> list[tuple[float, float]]:
    """A convex polygon containing the primitive (exact for rectangles and polygons; for
    ellipses the circumscribed n-gon, at most 1/cos(pi/n) - 1 = 0.9% larger)."""
    if p[0] == "p":
        return list(zip(p[1], p[2]))
    _, cx, cy, a, b, ang = p[:6]
    c, s = math.cos(ang), math.sin(ang)
    if p[0] == "r":
        local = [(-a, -b), (a, -b), (a, b), (-a, b)]
    else:
        k = 1.0 / math.cos(math.pi / n)
        local = [(a * k * math.cos(2 * math.pi * i / n), b * k * math.sin(2 * math.pi * i / n)) for i in range(n)]
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in local]


def _clip(poly, axis: int, limit: float, keep_below: bool):
    out = []
    for k in range(len(poly)):
        cur, nxt = poly[k], poly[(k + 1) % len(poly)]
        cin = cur[axis] <= limit if keep_below else cur[axis] >= limit
        nin = nxt[axis] <= limit if keep_below else nxt[axis] >= limit
        if cin:
            out.append(cur)
        if cin != nin:
            t = (limit - cur[axis]) / (nxt[axis] - cur[axis])
            out.append((cur[0] + t * (nxt[0] - cur[0]), cur[1] + t * (nxt[1] - cur[1])))
    return out


def visible_extent(p, w: int, h: int) -> tuple[float, float, float, float] | None:
    """Extent of the part of a primitive that pixel centres of a w x h image can reach (the
    region [0.5, w - 0.5] x [0.5, h - 0.5]): the exact extent when it lies inside, else the extent
    of its outline polygon clipped to that region (Sutherland-Hodgman). Every drawn pixel centre
    lies inside it. None when no pixel centre can be covered."""
    e = prim_extent(p)
    lo, hx, hy = 0.5, w - 0.5, h - 0.5
    if e[0] >= lo and e[1] >= lo and e[2] <= hx and e[3] <= hy:
        return e
    if e[2] < lo or e[0] > hx or e[3] < lo or e[1] > hy:
        return None
    poly = _outline(p)
    for axis, limit, below in ((0, lo, False), (0, hx, True), (1, lo, False), (1, hy, True)):
        poly = _clip(poly, axis, limit, below)
        if not poly:
            return None
    xs, ys = [q[0] for q in poly], [q[1] for q in poly]
    # an ellipse's circumscribed polygon may poke out where the ellipse does not: never beyond the exact extent
    x0, y0, x1, y1 = max(min(xs), e[0]), max(min(ys), e[1]), min(max(xs), e[2]), min(max(ys), e[3])
    eps = 1e-6
    if math.floor(x1 - 0.5 + eps) < math.ceil(x0 - 0.5 - eps) or math.floor(y1 - 0.5 + eps) < math.ceil(y0 - 0.5 - eps):
        return None  # a sliver between pixel centres
    return x0, y0, x1, y1


def union_extent(prims) -> tuple[float, float, float, float] | None:
    if not prims:
        return None
    e = [prim_extent(p) for p in prims]
    return min(v[0] for v in e), min(v[1] for v in e), max(v[2] for v in e), max(v[3] for v in e)


def prim_mask(p, h: int, w: int):
    """(i0, j0, mask) of the pixels a primitive covers inside an h x w image, or None."""
    x0, y0, x1, y1 = prim_extent(p)
    # pixel j is inside when x0 <= j + 0.5 <= x1
    j0, j1 = max(0, math.ceil(x0 - 0.5)), min(w, math.floor(x1 - 0.5) + 1)
    i0, i1 = max(0, math.ceil(y0 - 0.5)), min(h, math.floor(y1 - 0.5) + 1)
    if j1 <= j0 or i1 <= i0:
        return None
    if p[0] == "p":
        xs = np.arange(j0 + 0.5, j1, dtype=np.float64)
        ys = np.arange(i0 + 0.5, i1, dtype=np.float64)[:, None]
        px, py = p[1], p[2]
        n = len(px)
        area = sum(px[k] * py[(k + 1) % n] - px[(k + 1) % n] * py[k] for k in range(n))
        sign = 1.0 if area >= 0 else -1.0
        mask = None
        for k in range(n):
            ax, ay, bx, by = px[k], py[k], px[(k + 1) % n], py[(k + 1) % n]
            m = (sign * (bx - ax)) * (ys - ay) - (sign * (by - ay)) * (xs - ax) >= -1e-9
            mask = m if mask is None else mask & m
        return i0, j0, mask
    _, cx, cy, a, b, ang = p[:6]
    c, s = math.cos(ang), math.sin(ang)
    dx = np.arange(j0 + 0.5 - cx, j1 - cx, dtype=np.float64)[: j1 - j0]
    dy = np.arange(i0 + 0.5 - cy, i1 - cy, dtype=np.float64)[: i1 - i0, None]
    u = dx * c + dy * s
    v = dy * c - dx * s
    if p[0] == "r":
        np.abs(u, out=u)
        np.abs(v, out=v)
        mask = u <= a
        mask &= v <= b
    else:
        u *= 1.0 / max(a, 1e-9)
        v *= 1.0 / max(b, 1e-9)
        u *= u
        v *= v
        u += v
        mask = u <= 1.0
        if p[0] == "g":
            mask &= u >= p[7] ** 2
    return i0, j0, mask


def pack(col) -> int:
    """RGB -> the uint32 value of a packed pixel (little-endian R, G, B, 0)."""
    return int(col[0]) | (int(col[1]) << 8) | (int(col[2]) << 16)


def fill(img: np.ndarray, p, outline: bool = True) -> None:
    """Draw one primitive in place on a packed (H, W) uint32 image; with `outline` its border
    pixels are drawn darker."""
    h, w = img.shape
    m = prim_mask(p, h, w)
    if m is None:
        return
    i0, j0, mask = m
    col = p[6] if p[0] != "p" else p[3]
    region = img[i0 : i0 + mask.shape[0], j0 : j0 + mask.shape[1]]
    region[mask] = pack(col)
    if outline and mask.shape[0] > 2 and mask.shape[1] > 2:
        edge = mask.copy()
        edge[1:-1, 1:-1] &= ~(mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:])
        region[edge] = pack(tuple(int(v * 0.55) for v in col))


def draw(img: np.ndarray, prims, outline: bool = True) -> None:
    for p in prims:
        fill(img, p, outline)


def to_packed(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint32 packed."""
    out = np.zeros(rgb.shape[:2] + (4,), np.uint8)
    out[..., :3] = rgb
    return out.view(np.uint32)[..., 0]


def to_rgb(img: np.ndarray) -> np.ndarray:
    """(..., H, W) uint32 packed -> (..., H, W, 3) uint8 view."""
    return img.view(np.uint8).reshape(img.shape + (4,))[..., :3]


# ---------------------------------------------------------------------------------------------
# Scene backgrounds (precomputed per scene, palette variant and size; cached per process)


def _canvas_side(size: int) -> int:
    return int(round((1 + 2 * MARGIN) * size))


def _noise(rng, h, w, amp):
    return rng.normal(0.0, amp, (h, w, 1)).astype(np.float32)


def _px(v: float, size: int) -> int:
    return int(round((v + MARGIN) * size))


@lru_cache(maxsize=64)
def background(scene: str, variant: int, size: int) -> np.ndarray:
    """The empty room of a scene as a uint8 canvas covering world [-MARGIN, 1 + MARGIN]^2."""
    n = _canvas_side(size)
    rng = np.random.default_rng([zlib.crc32(scene.encode()), variant, size])
    img = np.zeros((n, n, 3), np.float32)
    yy = (np.arange(n, dtype=np.float32)[:, None] + 0.5) / size - MARGIN  # world y per row
    xx = (np.arange(n, dtype=np.float32)[None, :] + 0.5) / size - MARGIN
    Y = lambda v: _px(v, size)  # noqa: E731 - a one-line scale
    tint = np.array([[1.0, 1.0, 1.0], [1.06, 0.98, 0.92], [0.93, 0.99, 1.07]][variant % 3], np.float32)

    def band(y0, y1, col):
        img[max(0, Y(y0)) : max(0, Y(y1))] = np.array(col, np.float32) * tint

    if scene == "kitchen":
        band(-1, 0.42, (232, 226, 208))  # cream tiles
        tile = 0.075
        grout = ((np.mod(xx + 0.02, tile) < 0.008) | (np.mod(yy, tile) < 0.008)) & (yy < 0.42)
        img[np.broadcast_to(grout, (n, n))] = np.array((190, 185, 170), np.float32) * tint
        band(-1, 0.1, (150, 98, 58))  # upper cabinets
        for x in np.arange(-0.2, 1.2, 0.3):
            img[: Y(0.08), max(0, _px(x, size)) : max(0, _px(x, size)) + max(1, size // 80)] = (95, 60, 35)
        band(0.42, 0.47, (70, 70, 76))  # counter edge
        band(0.47, 2, (112, 116, 128))  # slate granite counter
        img[Y(0.47) :] += _noise(rng, n - Y(0.47), n, 11)
    elif scene == "workshop":
        band(-1, 0.44, (150, 152, 150))  # concrete wall
        img[: Y(0.44)] += _noise(rng, Y(0.44), n, 7)
        x0, x1, y0, y1 = _px(-0.1, size), _px(1.1, size), _px(0.02, size), _px(0.38, size)
        img[y0:y1, x0:x1] = np.array((176, 136, 92), np.float32) * tint  # pegboard panel
        holes = (np.mod(xx, 0.05) < 0.012) & (np.mod(yy, 0.05) < 0.012) & (yy > 0.02) & (yy < 0.38)
        img[np.broadcast_to(holes, (n, n))] = (90, 66, 40)
        band(0.44, 0.5, (120, 84, 48))  # bench edge
        band(0.5, 2, (206, 172, 118))  # plywood bench top
        grain = 10 * np.sin(yy * 90 + 3 * np.sin(xx * 7)) * (yy > 0.5)
        img += grain[..., None]
    elif scene == "garden":
        sky = np.clip((yy + 0.2) / 0.4, 0, 1)
        img[:] = np.array((120, 180, 235)) * (1 - sky[..., None]) + np.array((205, 228, 245)) * sky[..., None]
        fence = (yy > 0.04) & (yy < 0.42)
        planks = np.mod(xx, 0.09) < 0.078
        col = np.where(planks[..., None], np.array((160, 118, 72)), np.array((110, 78, 45)))
        img[np.broadcast_to(fence, (n, n))] = np.broadcast_to(col, (n, n, 3))[np.broadcast_to(fence, (n, n))]
        band(0.42, 2, (78, 146, 62))  # lawn
        img[Y(0.42) :] += _noise(rng, n - Y(0.42), n, 14) * np.array((0.6, 1.0, 0.5), np.float32)
        band(0.42, 0.47, (112, 76, 44))  # soil strip
    elif scene == "office":
        band(-1, 0.45, (196, 208, 224))  # pale blue wall
        wx0, wx1 = _px(0.55, size), _px(1.05, size)
        img[Y(0.0) : Y(0.34), wx0:wx1] = (235, 240, 245)  # window with blinds
        blinds = (np.mod(yy, 0.04) < 0.012) & (yy > 0.0) & (yy < 0.34) & (xx > 0.55) & (xx < 1.05)
        img[np.broadcast_to(blinds, (n, n))] = (170, 175, 185)
        img[Y(0.06) : Y(0.3), _px(-0.1, size) : _px(0.25, size)] = (30, 30, 34)  # monitor on the wall arm
        img[Y(0.08) : Y(0.28), _px(-0.08, size) : _px(0.23, size)] = (60, 110, 170)
        band(0.45, 0.5, (150, 120, 85))  # desk edge
        band(0.5, 2, (214, 186, 146))  # light desk
        img[Y(0.5) :] += _noise(rng, n - Y(0.5), n, 4)
    elif scene == "bathroom":
        band(-1, 0.44, (186, 224, 228))  # aqua small tiles
        tile = 0.045
        grout = ((np.mod(xx, tile) < 0.006) | (np.mod(yy, tile) < 0.006)) & (yy < 0.44)
        img[np.broadcast_to(grout, (n, n))] = (245, 250, 250)
        img[Y(-0.1) : Y(0.3), _px(0.25, size) : _px(0.75, size)] = (200, 215, 225)  # mirror
        img[Y(-0.08) : Y(0.28), _px(0.27, size) : _px(0.73, size)] = (168, 196, 212)
        band(0.44, 0.49, (215, 215, 220))  # vanity edge
        band(0.49, 2, (242, 242, 240))  # white marble
        vein = np.abs(np.sin(xx * 11 + yy * 19 + 1.5 * np.sin(yy * 13 + xx * 5))) < 0.05
        img[np.broadcast_to(vein & (yy > 0.49), (n, n))] -= 30
    elif scene == "living room":
        band(-1, 0.4, (222, 196, 152))  # warm wall
        img[Y(0.02) : Y(0.26), _px(0.1, size) : _px(0.42, size)] = (90, 60, 35)  # picture frame
        img[Y(0.04) : Y(0.24), _px(0.12, size) : _px(0.40, size)] = (120, 160, 120)
        img[Y(0.14) : Y(0.24), _px(0.12, size) : _px(0.40, size)] = (90, 130, 170)
        band(0.4, 0.45, (240, 236, 226))  # skirting board
        band(0.45, 2, (150, 46, 52))  # red carpet
        diamonds = (np.mod(np.abs(xx - 0.5) + np.abs(yy - 0.8), 0.16) < 0.02) & (yy > 0.45)
        img[np.broadcast_to(diamonds, (n, n))] = (205, 160, 80)
        img[Y(0.45) :] += _noise(rng, n - Y(0.45), n, 6)
    else:
        raise ValueError(f"unknown scene {scene!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Camera warp


@lru_cache(maxsize=8)
def _grid(size: int):
    g = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    return np.broadcast_to(g[None, :], (size, size)).copy(), np.broadcast_to(g[:, None], (size, size)).copy()


def warp(canvas: np.ndarray, size: int, cx: float, cy: float, roll: float, zoom: float) -> np.ndarray:
    """The camera's view of the packed static canvas: image point g (centred, units of frame
    width) sees world point c + R(roll) g / zoom. Nearest-neighbour gather; returns a packed
    (size, size) uint32 image."""
    gx, gy = _grid(size)
    n = canvas.shape[0]
    c, s = math.cos(roll) / zoom * size, math.sin(roll) / zoom * size
    xi = (gx * c - gy * s + (cx + MARGIN) * size).astype(np.int32)
    yi = (gx * s + gy * c + (cy + MARGIN) * size).astype(np.int32)
    np.clip(xi, 0, n - 1, out=xi)
    np.clip(yi, 0, n - 1, out=yi)
    yi *= n
    yi += xi
    return np.take(canvas.ravel(), yi)


def to_image(x: float, y: float, cam) -> tuple[float, float]:
    """World point -> image point (units of frame width, origin top-left) for camera cam =
    (cx, cy, roll, zoom)."""
    cx, cy, roll, zoom = cam
    dx, dy = x - cx, y - cy
    c, s = math.cos(roll), math.sin(roll)
    return 0.5 + zoom * (c * dx + s * dy), 0.5 + zoom * (-s * dx + c * dy)


# ---------------------------------------------------------------------------------------------
# H.264 output


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 26, preset: str = "superfast") -> bytes:
    """H.264 (libx264, yuv420p) in MP4 from (T, H, W, 3) uint8 or packed (T, H, W) uint32 frames.
    Single-threaded and bit-exact: the same frames give the same bytes on every run.
    Without PyAV (e.g. a GPU image that only has OpenCV) it falls back to OpenCV's MPEG-4 Part 2
    encoder: still deterministic on one machine, but other bytes than the H.264 path."""
    try:
        import av
    except ImportError:
        return _encode_mp4_opencv(frames, fps)

    packed = frames.ndim == 3
    h, w = frames.shape[1:3]

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        st = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        st.width, st.height = int(w), int(h)
        st.pix_fmt = "yuv420p"
        st.codec_context.thread_count = 1
        st.options = {"crf": str(crf), "preset": preset, "threads": "1"}
        for f in frames:
            vf = (
                av.VideoFrame.from_ndarray(f.view(np.uint8).reshape(h, w, 4), format="rgba")
                if packed
                else av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            )
            for pkt in st.encode(vf):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return buf.getvalue()


def _encode_mp4_opencv(frames: np.ndarray, fps: float) -> bytes:
    import os
    import tempfile

    import cv2

    if frames.ndim == 3:  # packed RGBA uint32 -> RGB
        frames = frames.view(np.uint8).reshape(*frames.shape, 4)[..., :3]
    h, w = frames.shape[1:3]
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        wr = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (int(w), int(h)))
        if not wr.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v video here")
        for f in frames:
            wr.write(np.ascontiguousarray(f[:, :, ::-1]))
        wr.release()
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


def decode_mp4(path) -> np.ndarray:
    """All frames of a video as uint8 (T, H, W, 3)."""
    try:
        import av
    except ImportError:
        import cv2

        cap = cv2.VideoCapture(str(path))
        out = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            out.append(bgr[:, :, ::-1])
        cap.release()
        return np.stack(out)

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
