"""Video decoding, Qwen2.5-VL frame sampling, and the counterfactual views of a clip.

Every stage (selection, RL, evaluation) gets its frames from `load_clip`, so they all see the same
frames, at the size the Qwen2.5-VL processor would produce itself:

- which frames: Qwen's rules (`qwen_vl_utils.smart_nframes` and its frame-index linspace), an even
  frame count, by `fps` or by `nframes`, inside an optional window (`start`/`end`) and before an
  optional `cutoff`;
- what size: Qwen's `smart_resize` (sides multiples of 28) under a per-frame and a whole-clip pixel
  budget;
- how: by seeking (PyAV by default, decord as an option), decoding only from the keyframe before
  each needed stretch, never the whole file for a short window or a sparse sample; PyAV decodes
  the stretches of a long window in several threads (`decode_threads`).

The counterfactual views of a clip (`full`, `blind`, `context`) are in `ego3s.data.views`.
Every failure on a bad file is a `VideoError` naming the file. See docs/video.md.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, get_args

import numpy as np
from PIL import Image

from ego3s.config import check_fields
from ego3s.data.schema import Sample

# Qwen2.5-VL's constants (qwen_vl_utils.vision_process): 14 px patches merged 2x2 -> 28 px tokens.
IMAGE_FACTOR = 28
FRAME_FACTOR = 2  # temporal patch size: a clip holds an even number of frames
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28  # per frame
VIDEO_MAX_PIXELS = 768 * 28 * 28  # per frame, a hard cap
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)  # whole clip: 90% of a 128k-token context
IMAGE_MIN_PIXELS = 4 * 28 * 28
IMAGE_MAX_PIXELS = 16384 * 28 * 28
MAX_RATIO = 200

Backend = Literal["pyav", "decord", "opencv"]
View = Literal["full", "blind", "context"]
BlindMode = Literal["blank", "none"]
Fill = Literal["mean", "blur"]  # what fills the boxes of the context view
VideoIdentity = Literal["stat", "content"]  # ego3s.identity.VIDEO_IDENTITIES
BACKENDS = get_args(Backend)
VIEWS = get_args(View)
BLIND_MODES = get_args(BlindMode)
FILLS = get_args(Fill)
BLANK_VALUE = 128  # the blind view's constant gray
_SEEK_GAP = 60  # frames; when the container's index can't tell, seek across gaps longer than this
_DECORD_CHUNK = 32  # frames per decord batch, so memory stays bounded before resizing
_THREADED_WINDOW = 4 * _SEEK_GAP  # frames: PyAV splits shorter windows into no stretches (thread start > gain)


@dataclass
class ClipSpec:
    """How a sample becomes what the model sees: the frame sampling (which frames, at what size,
    decoded how) and the view settings (how `blind` and `context` are built). Every stage's config
    inherits it (scoring, warm-up, SFT, training, evaluation), so that selection, training and
    evaluation see the same frames, and `sample_view` takes any of them. Keys stay flat in YAML."""

    nframes: int | None = field(default=None, metadata={"help": "frames per clip (None: by fps)"})
    fps: float = field(default=2.0, metadata={"help": "sampling fps when nframes is None"})
    max_frames: int = field(default=16, metadata={"help": "at most this many frames per clip"})
    max_pixels: int | None = field(default=None, metadata={"help": "per-frame pixel cap (None: Qwen's rule)"})
    min_pixels: int | None = field(default=None, metadata={"help": "per-frame pixel floor (None: Qwen's default)"})
    backend: Backend = field(default="pyav", metadata={"help": "video decoder: pyav, decord or opencv"})
    decode_threads: int | None = field(
        default=None,
        metadata={
            "help": "PyAV: threads that decode one long clip's stretches (None: 1 in a DataLoader worker, "
            "else min(8, 2 x CPUs / processes on this machine))"
        },
    )
    video_identity: VideoIdentity = field(
        default="stat",
        metadata={
            "help": "how a video file is recognised in caches, prediction logs and run identities: stat (path, size, "
            "modification time) or content (a hash of its bytes: survives copies and touches, reads every "
            "file once per process)"
        },
    )
    blind_mode: BlindMode = field(
        default="blank", metadata={"help": "blind view: blank (same-shape gray clip) or none (no visual entry at all)"}
    )
    context_fill: Fill = field(
        default="mean",
        metadata={"help": "context view: what fills the interaction boxes, mean (the frame's mean colour) or blur"},
    )

    def __post_init__(self):
        check_fields(
            self,
            choices={
                "backend": BACKENDS,
                "video_identity": get_args(VideoIdentity),
                "blind_mode": BLIND_MODES,
                "context_fill": FILLS,
            },
            ranges={
                "nframes": "[1, inf)",
                "fps": "(0, inf)",
                "max_frames": "[1, inf)",
                "max_pixels": "[1, inf)",
                "min_pixels": "[1, inf)",
                "decode_threads": "[1, inf)",
            },
        )

    def sampling_kwargs(self) -> dict:
        """The `load_clip` keyword arguments these settings stand for."""
        kw = {"fps": self.fps, "max_frames": self.max_frames, "backend": self.backend}
        for k in ("nframes", "max_pixels", "min_pixels", "decode_threads"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        return kw

    def clip_spec(self) -> ClipSpec:
        """These settings alone, out of a stage config that inherits them."""
        return ClipSpec(**{k: getattr(self, k) for k in ClipSpec.__dataclass_fields__})


FrameSampling = ClipSpec  # the older name, still importable


class VideoError(ValueError):
    """A video (or image) that cannot be read or sampled as asked; the message names the file."""


MIN_SIDE = 8  # pixels: a smaller source frame holds no picture (a broken encode), only upscaled noise


def _check_source_size(path: str, height: int, width: int) -> None:
    """Refuse frames too small to show anything, instead of silently upscaling a pixel to a grid."""
    if min(height, width) < MIN_SIDE:
        raise VideoError(f"{path}: frames of {width}x{height} pixels, below the {MIN_SIDE}-pixel minimum side")


@dataclass
class Clip:
    """Frames as the model will see them.

    `frames` (T, H, W, 3) uint8, already at the processor's grid size; `timestamps` (T,) seconds in
    the source video; `fps` the effective sampling rate (what `second_per_grid_ts` is computed
    from). The remaining fields describe where the frames came from, for `metadata()`.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    fps: float
    source: str = ""
    video_fps: float | None = None  # frame rate of the source video
    indices: np.ndarray | None = None  # frame indices in the source video
    window_frames: int | None = None  # frames in the window the indices were sampled from
    backend: str | None = None

    def __post_init__(self):
        f = self.frames
        if not (isinstance(f, np.ndarray) and f.ndim == 4 and f.shape[-1] == 3 and f.dtype == np.uint8):
            raise ValueError(
                f"Clip frames must be a (T, H, W, 3) uint8 array, got "
                f"{getattr(f, 'shape', type(f))} {getattr(f, 'dtype', '')}"
            )
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        if self.timestamps.shape != (len(f),):
            raise ValueError(f"Clip has {len(f)} frames but {self.timestamps.shape} timestamps")

    def metadata(self) -> dict:
        """Keyword arguments of transformers' `VideoMetadata` (a dict the video processor accepts as
        `video_metadata`), such that its `sampled_fps` equals `self.fps`. Without metadata the
        Qwen2.5-VL processor assumes 24 fps and gets `second_per_grid_ts` wrong."""
        t, h, w = self.frames.shape[:3]
        if self.video_fps and self.indices is not None and self.window_frames:
            return dict(
                total_num_frames=int(self.window_frames),
                fps=float(self.video_fps),
                width=w,
                height=h,
                duration=self.window_frames / self.video_fps,
                video_backend=self.backend,
                frames_indices=[int(i) for i in self.indices],
            )
        # frames made in memory: describe them as a whole video played at the sampling rate
        return dict(
            total_num_frames=t,
            fps=float(self.fps),
            width=w,
            height=h,
            duration=t / self.fps,
            video_backend=self.backend,
            frames_indices=list(range(t)),
        )


# ----------------------------------------------------------------------------- sampling rules


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen's resize rule: both sides multiples of `factor`, area in [min_pixels, max_pixels],
    aspect ratio kept as closely as the grid allows."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} exceeds {MAX_RATIO}")
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) is below min_pixels ({min_pixels})")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:  # shrink, rounding down so the budget holds
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:  # grow, rounding up so the minimum holds
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


def frame_window(
    total_frames: int,
    video_fps: float,
    *,
    start: float | None = None,
    end: float | None = None,
    cutoff: float | None = None,
) -> tuple[int, int]:
    """First and last frame index (inclusive) that may be sampled. Frame i is at i / video_fps.

    `start`/`end` follow Qwen (`calculate_video_frame_range`): clamped to the video, first frame at
    or after `start`, last at or before `end`. `cutoff` keeps frames strictly before it.
    Raises ValueError when no frame is left."""
    if total_frames <= 0 or not video_fps or video_fps <= 0:
        raise ValueError(f"video has {total_frames} frames at {video_fps} fps")
    duration = total_frames / video_fps
    first, last = 0, total_frames - 1
    if start is not None:
        if start >= duration:
            raise ValueError(f"window starts at {start:g} s, at or after the end of the video ({duration:.3f} s)")
        first = math.ceil(max(0.0, start) * video_fps)
    if end is not None:
        last = min(last, math.floor(min(max(0.0, end), duration) * video_fps))
        while last >= 0 and last / video_fps > end:  # guard against float rounding
            last -= 1
    if cutoff is not None:
        before = math.ceil(cutoff * video_fps) - 1
        while before >= 0 and before / video_fps >= cutoff:
            before -= 1
        while (before + 1) / video_fps < cutoff:
            before += 1
        last = min(last, before)
    if last < first:
        raise ValueError(
            f"no frames in window start={start}, end={end}, cutoff={cutoff} "
            f"(video: {total_frames} frames at {video_fps:g} fps)"
        )
    return first, last


def sample_nframes(
    total_frames: int,
    video_fps: float,
    *,
    nframes: int | None = None,
    fps: float = FPS,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
) -> int:
    """Qwen's frame count (`smart_nframes`) for a window of `total_frames` frames: `nframes` rounded
    to even, or `fps` frames a second clamped to [min_frames, max_frames] and to the window,
    rounded down to even. Raises ValueError when that is not in [2, total_frames]."""
    if total_frames < FRAME_FACTOR:
        raise ValueError(f"the window holds {total_frames} frame; Qwen needs at least {FRAME_FACTOR}")
    if nframes is not None:
        n = round(nframes / FRAME_FACTOR) * FRAME_FACTOR
    else:
        lo = math.ceil(min_frames / FRAME_FACTOR) * FRAME_FACTOR
        hi = math.floor(max_frames / FRAME_FACTOR) * FRAME_FACTOR
        n = min(max(total_frames / video_fps * fps, lo), hi, total_frames)
        n = math.floor(n / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= n <= total_frames:
        raise ValueError(
            f"cannot sample {n} frames from a window of {total_frames} "
            f"(Qwen needs an even count in [{FRAME_FACTOR}, {total_frames}])"
        )
    return n


def sample_indices(first: int, last: int, n: int) -> np.ndarray:
    """`n` evenly spaced frame indices from `first` to `last`, both included.

    Qwen computes `torch.linspace(first, last, n).round()` in float32; float64 rounds about 1.5% of
    (first, last, n) differently at .5 ties, so this mirrors torch's float32 arithmetic (from the
    start for the first half, from the end for the second) and its round-half-to-even."""
    if n == 1:
        return np.array([first], dtype=np.int64)
    i = np.arange(n, dtype=np.float32)
    step = np.float32(last - first) / np.float32(n - 1)
    v = np.where(
        np.arange(n) < n // 2, np.float32(first) + step * i, np.float32(last) - step * (np.float32(n - 1) - i)
    ).astype(np.float32)
    return np.round(v).astype(np.int64)


def video_size(
    height: int,
    width: int,
    nframes: int,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
    resized_height: int | None = None,
    resized_width: int | None = None,
) -> tuple[int, int]:
    """Frame size for a clip of `nframes` frames, as Qwen's `fetch_video` computes it: the per-frame
    cap is min(VIDEO_MAX_PIXELS, total_pixels spread over nframes / 2 temporal patches), never
    below 1.05 * min_pixels; a `max_pixels` above that cap is ignored. `resized_height` and
    `resized_width` together override everything (snapped to the 28-grid)."""
    if resized_height is not None and resized_width is not None:
        return smart_resize(resized_height, resized_width)
    cap = max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    if max_pixels is not None:
        cap = min(cap, max_pixels)
    return smart_resize(height, width, min_pixels=min_pixels, max_pixels=cap)


# ----------------------------------------------------------------------------- loading


def load_clip(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    cutoff: float | None = None,
    nframes: int | None = None,
    fps: float = FPS,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
    resized_height: int | None = None,
    resized_width: int | None = None,
    backend: str = "pyav",
    decode_threads: int | None = None,
) -> Clip:
    """Decode the frames Qwen2.5-VL would sample from `path` and resize them to its grid.

    `start`/`end`: window in seconds; `cutoff`: only frames strictly before it. `nframes`, when
    given, wins over `fps`. `max_pixels=None` means Qwen's per-frame cap (see `video_size`).
    `decode_threads` (PyAV): threads for one clip's stretches, same frames (see `_open_pyav`).
    Raises VideoError naming the file for anything wrong with the file or the window."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = _existing_file(path)
    if backend == "pyav":
        total, video_fps, read, close = _open_pyav(path, decode_threads)
    else:
        total, video_fps, read, close = {"decord": _open_decord, "opencv": _open_opencv}[backend](path)
    try:
        try:
            first, last = frame_window(total, video_fps, start=start, end=end, cutoff=cutoff)
            n = sample_nframes(
                last - first + 1, video_fps, nframes=nframes, fps=fps, min_frames=min_frames, max_frames=max_frames
            )
        except ValueError as e:
            raise VideoError(f"{path}: {e}") from None
        indices = sample_indices(first, last, n)
        size, lock = [], threading.Lock()

        def convert(rgb: np.ndarray) -> np.ndarray:  # readers resize as they decode: memory stays bounded
            with lock:
                if not size:
                    _check_source_size(path, rgb.shape[0], rgb.shape[1])
                    try:
                        size.append(
                            video_size(
                                rgb.shape[0],
                                rgb.shape[1],
                                n,
                                min_pixels=min_pixels,
                                max_pixels=max_pixels,
                                total_pixels=total_pixels,
                                resized_height=resized_height,
                                resized_width=resized_width,
                            )
                        )
                    except ValueError as e:
                        raise VideoError(f"{path}: {e}") from None
            return _resize(rgb, size[0])

        frames = list(read(indices, convert))
    finally:
        close()
    if len(frames) != n:
        raise VideoError(f"{path}: decoded {len(frames)} of {n} frames")
    return Clip(
        frames=np.stack(frames),
        timestamps=indices / video_fps,
        fps=n / (last - first + 1) * video_fps,
        source=path,
        video_fps=video_fps,
        indices=indices,
        window_frames=last - first + 1,
        backend=backend,
    )


def load_sample_clip(sample: Sample, **sampling) -> Clip:
    """`load_clip` on a sample's video, window and cutoff; errors also name the sample id."""
    if sample.video is None:
        raise VideoError(f"sample {sample.id!r}: field 'video' is empty")
    try:
        return load_clip(sample.video, start=sample.start, end=sample.end, cutoff=sample.cutoff, **sampling)
    except VideoError as e:
        raise VideoError(f"sample {sample.id!r}, field 'video': {e}") from e


def load_image(
    path: str | os.PathLike,
    *,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
    resized_height: int | None = None,
    resized_width: int | None = None,
) -> np.ndarray:
    """An image as (H, W, 3) uint8, resized like Qwen's `fetch_image` (RGBA flattened on white,
    bicubic resize to `smart_resize`'s size)."""
    path = _existing_file(path)
    try:
        with Image.open(path) as im:
            if im.mode == "RGBA":
                rgb = Image.new("RGB", im.size, (255, 255, 255))
                rgb.paste(im, mask=im.split()[3])
            else:
                rgb = im.convert("RGB")
    except (OSError, Image.DecompressionBombError, ValueError) as e:
        raise VideoError(f"{path}: cannot read as an image ({e})") from None
    _check_source_size(path, rgb.height, rgb.width)
    try:
        if resized_height is not None and resized_width is not None:
            h, w = smart_resize(resized_height, resized_width)
        else:
            h, w = smart_resize(rgb.height, rgb.width, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as e:
        raise VideoError(f"{path}: {e}") from None
    return np.array(rgb.resize((w, h), Image.BICUBIC))  # np.array: writable, unlike np.asarray


def _existing_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://") :]
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise VideoError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    return path


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if rgb.shape[:2] == (h, w):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))


# A backend opener returns (frame count, fps, read, close); read(ascending indices, convert) yields
# convert(frame) for one RGB (H, W, 3) uint8 frame per index, at the video's own size.
Reader = Callable[[np.ndarray, Callable[[np.ndarray], np.ndarray]], Iterator[np.ndarray]]


def cpu_share() -> float:
    """The CPUs this process may run on (its affinity mask, not the machine's count) over the
    processes torchrun started on this machine, which share them."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus / max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def default_decode_threads() -> int:
    """1 inside a DataLoader worker (the workers already decode clips side by side), else
    min(8, 2 x this process's CPU share): PyAV holds the GIL for part of each frame, so two
    threads per core overlap."""
    data = sys.modules.get("torch.utils.data")
    if data is not None and data.get_worker_info() is not None:
        return 1
    return max(1, min(8, int(2 * cpu_share())))


def stretches(indices: np.ndarray, threads: int) -> list[np.ndarray]:
    """The sampled indices cut into contiguous stretches, one per decoding thread: none for a short
    window (starting threads and opening the file again costs more than it saves), and at least
    two frames per stretch."""
    k = min(threads, len(indices) // 2)
    if k <= 1 or indices[-1] - indices[0] < _THREADED_WINDOW:
        return [indices]
    return np.array_split(indices, k)


def _open_pyav(path: str, decode_threads: int | None = None) -> tuple[int, float, Reader, Callable[[], None]]:
    try:
        import av
    except ImportError:
        raise VideoError(f"{path}: backend 'pyav' needs the av package (pip install av)") from None
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: cannot open as a video ({e})") from None
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoError(f"{path}: no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise VideoError(f"{path}: unknown frame rate")
        total = stream.frames or _count_packets(container, stream)
        if total <= 0:
            raise VideoError(f"{path}: the video stream has no frames")
    except VideoError:
        container.close()
        raise
    except av.FFmpegError as e:
        container.close()
        raise VideoError(f"{path}: cannot read the video stream ({e})") from None

    threads = decode_threads if decode_threads is not None else default_decode_threads()
    if threads < 1:
        container.close()
        raise ValueError(f"decode_threads must be >= 1, got {threads}")

    def read(indices: np.ndarray, convert) -> Iterator[np.ndarray]:
        parts = stretches(indices, threads)

        def stretch(k: int) -> list[np.ndarray]:
            """Stretch k with its own file handle (the first reuses the open one): the seeks and
            decoder of one stretch never touch another's, so the frames are those of one pass."""
            c = av.open(path) if k else container
            try:
                return [convert(rgb) for rgb in _pyav_frames(c, c.streams.video[0], parts[k], total, path)]
            finally:
                if k:
                    c.close()

        try:
            if len(parts) == 1:
                yield from stretch(0)
                return
            with ThreadPoolExecutor(len(parts), thread_name_prefix="ego3s-decode") as pool:
                for frames in pool.map(stretch, range(len(parts))):
                    yield from frames
        except av.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed ({e})") from e

    return total, float(rate), read, container.close


def _count_packets(container, stream) -> int:
    """Frame count for containers without one in the header (mkv, webm): demux, don't decode."""
    n = sum(1 for p in container.demux(stream) if p.size)
    container.seek(0)
    return n


def _pyav_frames(
    container, stream, indices: Sequence[int], total: int, path: str, stats: dict | None = None
) -> Iterator[np.ndarray]:
    """Yield the frame at each (ascending) index, decoding as little as possible.

    Before each wanted frame, a second, demux-only handle asks the container's index where the
    keyframe before that frame is (a seek plus one packet read, no decoding). When that keyframe
    lies after the frame decoded last, the decoder seeks to it; otherwise it decodes forward.
    A seek that lands after the wanted frame (B-frames decoded after the next keyframe, demuxers
    that seek on decode timestamps) backs off further until it lands at or before it.

    Packets before the wanted frame are decoded with `skip_frame = NONREF`: frames that no other
    frame references (most B-frames) are not needed to reach it, and skipping them halves the
    frames decoded on x264's defaults (same pixels; 1.3x faster on a 3-minute clip). If a skipped
    frame could have been the answer (a variable-rate video with no frame at index i), that frame
    is decoded again without skipping.

    The frame for index i is the last frame whose timestamp rounds to an index <= i (exactly
    frame i in a constant-rate video). `stats`, when given, counts 'decoded' frames, 'seeks' and
    'redone' (wanted frames whose stretch was decoded again without skipping)."""
    import av

    tb, rate = stream.time_base, Fraction(stream.average_rate or stream.guessed_rate)
    # variable rate (average below the nominal rate): several frames can round to one index, and
    # the answer is the last of them, so a frame at index w is kept only once the next one is past w
    variable = bool(stream.guessed_rate) and rate != Fraction(stream.guessed_rate)
    t0 = stream.start_time or 0
    stats = stats if stats is not None else {}
    stats.setdefault("decoded", 0)
    stats.setdefault("seeks", 0)
    stats.setdefault("redone", 0)
    codec = stream.codec_context

    def index_of(pts) -> int:
        return math.floor((pts - t0) * tb * rate + Fraction(1, 2))

    def pts_of(i: int) -> int:
        return t0 + math.floor(Fraction(i) / rate / tb)

    probe = av.open(path)
    pstream = probe.streams.video[0]

    def keyframe_before(w: int) -> int | None:
        """Index of the keyframe a seek to frame w lands on, or None if the index can't say."""
        probe.seek(pts_of(w), stream=pstream, backward=True)
        for packet in probe.demux(pstream):
            if packet.pts is None:
                continue
            return index_of(packet.pts) if packet.is_keyframe else None
        return None

    decoder = None  # frames from the decoder's current position
    pushed = []  # a frame read ahead of the previous wanted index
    goal = 0  # the index wanted now: packets before it may skip non-reference frames
    skipping = True
    unseen = set()  # timestamps of packets decoded with NONREF whose frame has not come out (yet)

    def decode_packets():
        for packet in container.demux(stream):
            before = packet.pts is not None and index_of(packet.pts) < goal
            codec.skip_frame = "NONREF" if skipping and before else "DEFAULT"
            if skipping and before:
                unseen.add(packet.pts)
            for frame in packet.decode():
                unseen.discard(frame.pts)
                yield frame

    def pull():
        if pushed:
            return pushed.pop()
        frame = next(decoder, None)
        if frame is None:
            return None
        stats["decoded"] += 1
        return index_of(frame.pts if frame.pts is not None else frame.dts), frame

    def seek_to(w: int):
        """Position the decoder so that the next frame pulled is at or before index w."""
        nonlocal decoder
        back = 0
        while True:
            target = max(0, w - back)
            container.seek(pts_of(target), stream=stream, backward=True)
            stats["seeks"] += 1
            decoder = decode_packets()
            pushed.clear()
            unseen.clear()
            got = pull()
            if got is not None and (got[0] <= w or target == 0):
                pushed.append(got)
                return
            if got is None and target == 0:
                return  # nothing decodable at all; the caller reports the missing frame
            back = max(2 * back, 8)

    def worth_seeking(w: int) -> bool:
        if decoder is None or current is None:
            return True
        if w - current[0] <= 1:
            return False
        key = keyframe_before(w)
        if key is None or key > w:  # the index can't say: seek only across a long gap
            return w - current[0] > _SEEK_GAP
        return key > current[0]

    current = None  # (index, frame): the latest frame at or before the wanted index
    try:
        for w in (int(i) for i in indices):
            if current is not None and current[0] == w:
                yield current[1].to_ndarray(format="rgb24")
                continue
            goal = w
            if worth_seeking(w):
                seek_to(w)
                current = None
            while True:
                got = pull()
                if got is None:
                    break
                if got[0] > w:
                    pushed.append(got)
                    break
                current = got
                if got[0] == w and not variable:
                    break
            if (
                current is not None
                and current[0] < w
                and any(p > (current[1].pts or 0) and index_of(p) <= w for p in unseen)
            ):
                # a skipped frame lies after the last one decoded and at or before w: it is the answer
                stats["redone"] += 1
                skipping = False
                seek_to(current[0])
                current = None
                while (got := pull()) is not None and got[0] <= w:
                    current = got
                if got is not None:
                    pushed.append(got)
                skipping = True
            if current is None or (current[0] < w and not pushed and current[0] < total - 2):
                at = "no frame" if current is None else f"the last frame is {current[0]}"
                raise VideoError(f"{path}: frame {w} of {total} is missing, {at} (truncated file?)")
            yield current[1].to_ndarray(format="rgb24")
    finally:
        probe.close()


def _open_decord(path: str) -> tuple[int, float, Reader, Callable[[], None]]:
    try:
        import decord
    except ImportError:
        raise VideoError(f"{path}: backend 'decord' needs the decord package (pip install decord)") from None
    # decord raises its own DECORDError (not a RuntimeError) or RuntimeError, so catch broadly.
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        total, rate = len(vr), float(vr.get_avg_fps())
    except Exception as e:
        raise VideoError(f"{path}: decord cannot open it as a video ({_first_line(e)})") from None

    def read(indices: np.ndarray, convert) -> Iterator[np.ndarray]:
        for k in range(0, len(indices), _DECORD_CHUNK):
            chunk = [int(i) for i in indices[k : k + _DECORD_CHUNK]]
            try:
                batch = vr.get_batch(chunk).asnumpy()
            except Exception as e:
                raise VideoError(f"{path}: decoding frames {chunk[0]}..{chunk[-1]} failed ({_first_line(e)})") from None
            yield from (convert(rgb) for rgb in batch)

    return total, rate, read, lambda: None


def _open_opencv(path: str) -> tuple[int, float, Reader, Callable[[], None]]:
    """OpenCV backend, for images (such as our GPU one) that have OpenCV but neither PyAV nor
    decord. OpenCV's frame seeking is inexact on many codecs, so it reads forward with `grab()`
    (demux + decode, no colour conversion) and converts only the wanted frames: exact, slower on
    long videos than PyAV's keyframe seeking."""
    try:
        import cv2
    except ImportError:
        raise VideoError(f"{path}: backend 'opencv' needs OpenCV (pip install opencv-python-headless)") from None
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open it as a video")
    total, rate = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
    if total <= 0 or not rate > 0:
        cap.release()
        raise VideoError(f"{path}: no video frames (frame count {total}, fps {rate})")

    def read(indices: np.ndarray, convert) -> Iterator[np.ndarray]:
        pos = 0
        for i in indices:
            while pos <= i:
                if not cap.grab():
                    raise VideoError(f"{path}: frame {pos} of {total} is missing (truncated file?)")
                pos += 1
            ok, bgr = cap.retrieve()
            if not ok:
                raise VideoError(f"{path}: decoding frame {i} failed")
            yield convert(bgr[:, :, ::-1].copy())

    return total, rate, read, cap.release


def _first_line(e: Exception) -> str:
    """decord's message without its log prefix ("[12:00:00] /src/video_reader.cc:83: ")."""
    lines = [s for s in str(e).splitlines() if s.strip()]
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", lines[0])[:300] if lines else type(e).__name__
