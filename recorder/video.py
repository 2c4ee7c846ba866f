"""The project's one video encoder/decoder (PyAV): RGB frames <-> MP4, several episodes per file.

Encoding: AV1 through SVT-AV1 (``libsvtav1``) when PyAV's FFmpeg has it, else H.264 (``libx264``);
yuv420p; constant quality (``crf``); a keyframe at least every ``gop`` frames (default 2, what
LeRobot writes, so a training loader seeks cheaply; always <= 1 s). Frame ``n`` of a file has
pts ``n`` in a 1/fps time base, i.e. timestamp n / fps: episodes appended one after another
occupy consecutive frame ranges, and ``Segment`` says where each one lies.

Files are written to ``<name>.partial`` and renamed on ``close()``; ``abort()`` removes the
partial file, so a file at its final name is always a finished, playable video.

    with VideoWriter(path, fps=30, width=640, height=480) as w:
        seg0 = w.add_episode(frames_of_episode_0)   # Segment(0, 600, 0.0, 20.0)
        seg1 = w.add_episode(frames_of_episode_1)   # Segment(600, 1200, 20.0, 40.0)
    frames = read_frames(path, seg1.start, seg1.stop)   # (600, 480, 640, 3) uint8
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from recorder.errors import RecorderError

PIX_FMT = "yuv420p"
AV1 = "libsvtav1"
H264 = "libx264"
# SVT-AV1 prints its whole configuration to stderr per file; errors only.
os.environ.setdefault("SVT_LOG", "1")


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a core dependency
        raise RecorderError("video needs PyAV: pip install 'av==18.1.0'") from e
    return av


def available_codecs() -> list[str]:
    """The encoders this module can use with this PyAV, best first."""
    have = _av().codecs_available
    return [c for c in (AV1, H264) if c in have]


def pick_codec(preferred: str = "auto") -> str:
    """``auto``: AV1 where PyAV's FFmpeg has SVT-AV1, else H.264. ``av1``/``h264`` or an
    FFmpeg encoder name ask for one; asking for one that is missing is an error."""
    names = {"av1": AV1, "h264": H264}
    have = available_codecs()
    if preferred == "auto":
        if not have:
            raise RecorderError("PyAV's FFmpeg has neither libsvtav1 nor libx264; install the PyPI 'av' wheel")
        return have[0]
    codec = names.get(preferred, preferred)
    if codec not in _av().codecs_available:
        raise RecorderError(f"PyAV's FFmpeg has no encoder {codec!r}; it has {have or 'neither AV1 nor H.264'}")
    return codec


@dataclass(frozen=True)
class VideoOptions:
    codec: str = "auto"  # "auto" | "av1" | "h264" | an FFmpeg encoder name
    crf: int = 30  # constant quality: lower is better and bigger (LeRobot's default is 30)
    preset: int | str | None = None  # None: 12 for SVT-AV1 (LeRobot's; 0 slow..13 fast), "veryfast" for x264
    gop: int = 2  # frames between keyframes; capped at 1 s
    threads: int = 0  # encoder threads, 0 = the encoder's choice

    def encoder_options(self, codec: str, fps: float) -> tuple[int, dict[str, str]]:
        gop = max(1, min(int(self.gop), int(round(fps))))
        opts = {"crf": str(int(self.crf))}
        if codec == AV1:
            opts["preset"] = str(12 if self.preset is None else self.preset)
            if self.threads:
                opts["svtav1-params"] = f"lp={int(self.threads)}"
        elif codec == H264:
            opts["preset"] = str("veryfast" if self.preset is None else self.preset)
            if self.threads:
                opts["threads"] = str(int(self.threads))
        return gop, opts


@dataclass(frozen=True)
class Segment:
    """Where one episode lies in a video file: frames ``[start, stop)``, times ``[from_s, to_s)``."""

    start: int
    stop: int
    from_s: float
    to_s: float

    @property
    def n_frames(self) -> int:
        return self.stop - self.start


_ENCODER_RT_PRIORITY = 99  # what SVT-AV1 gives its threads when it runs as root; rig never uses 99


def _undo_encoder_realtime(caller: tuple[int, int] | None) -> int:
    """SVT-AV1, run as root, puts the calling thread and every thread it starts at SCHED_FIFO 99.
    Encoding is background work: at that priority it would starve the control loop (FIFO 20) and
    the rest of the machine. Put the caller back as it was and the encoder's threads to normal.
    Returns how many threads were changed."""
    if not hasattr(os, "sched_setscheduler"):
        return 0
    import threading

    me = threading.get_native_id()
    changed = 0
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return 0
    for tid in tids:
        try:
            policy = os.sched_getscheduler(tid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
            prio = os.sched_getparam(tid).sched_priority
            if tid == me and caller is not None and (policy, prio) != caller:
                os.sched_setscheduler(tid, caller[0], os.sched_param(caller[1]))
                changed += 1
            elif tid != me and policy == os.SCHED_FIFO and prio == _ENCODER_RT_PRIORITY:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                changed += 1
        except OSError:  # a thread that ended meanwhile
            continue
    return changed


def _thread_scheduling() -> tuple[int, int] | None:
    if not hasattr(os, "sched_getscheduler"):
        return None
    return (os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0), os.sched_getparam(0).sched_priority)


@dataclass
class VideoWriter:
    """Encodes RGB uint8 frames (H, W, 3) of one size into one MP4, episode after episode."""

    path: Path
    fps: float
    width: int
    height: int
    options: VideoOptions = field(default_factory=VideoOptions)

    def __post_init__(self) -> None:
        av = _av()
        self.path = Path(self.path)
        if self.fps <= 0:
            raise RecorderError(f"video fps must be > 0, not {self.fps}")
        if self.width % 2 or self.height % 2:
            raise RecorderError(
                f"{self.width}x{self.height} frames cannot be stored as {PIX_FMT} (width and height must be even)"
            )
        self.codec = pick_codec(self.options.codec)
        self.gop, opts = self.options.encoder_options(self.codec, self.fps)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._rate = Fraction(self.fps).limit_denominator(1001)
        self._container = av.open(str(self.partial), mode="w", format="mp4")
        try:
            self._stream = self._container.add_stream(self.codec, rate=self._rate, options=opts)
            self._stream.width = self.width
            self._stream.height = self.height
            self._stream.pix_fmt = PIX_FMT
            self._stream.time_base = 1 / self._rate
            self._stream.codec_context.gop_size = self.gop
        except Exception:
            self.abort()
            raise
        self._closed = False

    def write(self, rgb: np.ndarray) -> int:
        """Encode one frame; returns its index in the file."""
        av = _av()
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        if img.shape != (self.height, self.width, 3):
            raise RecorderError(
                f"{self.path.name}: frame of shape {img.shape} in a {self.height}x{self.width}x3 video"
            )
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.frames
        first = self.frames == 0
        caller = _thread_scheduling() if first else None
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        if first:  # the encoder opens (and starts its threads) on the first frame
            _undo_encoder_realtime(caller)
        self.frames += 1
        return self.frames - 1

    def add_episode(self, frames: Iterable[np.ndarray]) -> Segment:
        """Append an episode's frames; returns where they lie in the file."""
        start = self.frames
        for f in frames:
            self.write(f)
        return Segment(start, self.frames, start / self.fps, self.frames / self.fps)

    @property
    def bytes_so_far(self) -> int:
        try:
            return self.partial.stat().st_size
        except OSError:
            return 0

    def close(self) -> Path:
        """Flush the encoder, finish the MP4 and move it to its final name."""
        if self._closed:
            return self.path
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._closed = True
            os.replace(self.partial, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop without a file: the partial file is removed."""
        self._closed = True
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except Exception:
                pass
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()


def encode_video(
    path: str | os.PathLike[str], episodes: Iterable[Iterable[np.ndarray]], fps: float,
    options: VideoOptions | None = None,
) -> list[Segment]:
    """Encode episodes (each an iterable of frames of one size) one after another into ``path``."""
    writer: VideoWriter | None = None
    segments: list[Segment] = []
    try:
        for frames in episodes:
            it = iter(frames)
            first = next(it, None)
            if first is None:
                n = writer.frames if writer else 0
                segments.append(Segment(n, n, n / fps, n / fps))
                continue
            if writer is None:
                h, w = first.shape[:2]
                writer = VideoWriter(Path(path), fps, w, h, options or VideoOptions())
            start = writer.frames
            writer.write(first)
            for f in it:
                writer.write(f)
            segments.append(Segment(start, writer.frames, start / fps, writer.frames / fps))
        if writer is None:
            raise RecorderError(f"no frames to encode into {path}")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return segments


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    frames: int
    pix_fmt: str


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    av = _av()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = s.frames or sum(1 for _ in c.demux(s) if _.size)
        return VideoInfo(s.codec_context.name, s.codec_context.width, s.codec_context.height,
                         float(s.average_rate or s.guessed_rate or 0), int(frames), s.codec_context.pix_fmt or "")


def iter_frames(path: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) for frames ``[start, stop)`` of the file, seeking to the keyframe
    before ``start`` rather than decoding from the beginning."""
    av = _av()
    if not Path(path).exists():
        raise RecorderError(f"video {path} does not exist")
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        rate = s.average_rate or s.guessed_rate
        tb = s.time_base
        to_index = (lambda pts: int(round(pts * tb * rate))) if rate else (lambda pts: int(pts))
        if start > 0 and rate:
            c.seek(int(Fraction(start) / rate / tb), stream=s, backward=True, any_frame=False)
        for frame in c.decode(s):
            if frame.pts is None:
                continue
            i = to_index(frame.pts)
            if i < start:
                continue
            if stop is not None and i >= stop:
                break
            yield i, frame.to_ndarray(format="rgb24")


def read_frames(path: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames ``[start, stop)`` as (N, H, W, 3) uint8."""
    out = [img for _, img in iter_frames(path, start, stop)]
    if stop is not None and len(out) != stop - max(start, 0):
        raise RecorderError(f"video {path} holds {start + len(out)} frames; frames [{start}, {stop}) were asked for")
    return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


def read_segment(path: str | os.PathLike[str], from_s: float, to_s: float, fps: float) -> np.ndarray:
    """Frames whose timestamps lie in ``[from_s, to_s)`` (frame n is at n / fps)."""
    return read_frames(path, int(round(from_s * fps)), int(round(to_s * fps)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images or stacks (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
