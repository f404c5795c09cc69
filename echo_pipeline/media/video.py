"""Video files from frames: H.264 MP4 (with an optional muxed audio track), GIF, probing, posters.

MP4s are encoded by the ffmpeg binary imageio-ffmpeg bundles (no system ffmpeg needed): raw RGB
frames on a pipe, libx264 High profile, yuv420p (what every browser and phone decodes), `+faststart`
(the index sits before the data, so a browser can start playing while it downloads). Bytes are
repeatable: bit-exact muxing, no metadata or creation time, and a fixed x264 thread count (x264 is
deterministic for a given thread count; its settings, thread count included, are written into the
stream, so a machine-dependent default would change the bytes).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from echo_pipeline.errors import InvalidInputError

X264_THREADS = 4
FFMPEG_TIMEOUT_S = 600


def ffmpeg_exe() -> str:
    """Path of imageio-ffmpeg's bundled ffmpeg binary."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise InvalidInputError("video needs the imageio-ffmpeg package (pip install imageio-ffmpeg)") from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _check_frames(frames: Sequence[Image.Image], fps: int) -> tuple[int, int]:
    if not frames:
        raise InvalidInputError("a video needs at least one frame")
    if not isinstance(fps, int) or not 1 <= fps <= 120:
        raise InvalidInputError(f"fps must be an integer in 1..120, not {fps!r}")
    w, h = frames[0].size
    for i, frame in enumerate(frames):
        if frame.size != (w, h):
            raise InvalidInputError(f"frame {i} is {frame.size[0]}x{frame.size[1]}, frame 0 is {w}x{h}")
    return w, h


def encode_mp4(frames: Sequence[Image.Image], fps: int, *, audio_path: str | None = None, crf: int = 18) -> bytes:
    """H.264 MP4 of `frames` at `fps`; with `audio_path`, its audio is muxed in as AAC, trimmed to
    the video's length (a shorter track just ends early). Width and height must be even (yuv420p)."""
    w, h = _check_frames(frames, fps)
    if w % 2 or h % 2:
        raise InvalidInputError(f"MP4 frames need even width and height (H.264 yuv420p), not {w}x{h}")
    if not 0 <= crf <= 51:
        raise InvalidInputError(f"crf must be in 0..51, not {crf}")
    if audio_path is not None and not Path(audio_path).is_file():
        raise InvalidInputError(f"audio file not found: {audio_path}")
    duration = len(frames) / fps
    with tempfile.TemporaryDirectory(prefix="echo-video-") as tmp:
        out = Path(tmp) / "video.mp4"
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(fps), "-i", "pipe:0"]
        if audio_path is not None:
            cmd += ["-i", str(audio_path), "-map", "0:v:0", "-map", "1:a:0?",
                    "-c:a", "aac", "-b:a", "192k", "-ac", "2", "-flags:a", "+bitexact"]
        # BT.709, tagged: players otherwise guess the matrix from the size and shift colours
        cmd += ["-vf", "scale=out_color_matrix=bt709:out_range=tv:flags=lanczos+accurate_rnd+full_chroma_int",
                "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
                "-c:v", "libx264", "-preset", "medium", "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
                "-profile:v", "high", "-threads", str(X264_THREADS), "-flags:v", "+bitexact",
                "-r", str(fps), "-t", f"{duration:.6f}", "-map_metadata", "-1", "-fflags", "+bitexact",
                "-movflags", "+faststart", str(out)]
        raw = b"".join(np.asarray(f.convert("RGB"), dtype=np.uint8).tobytes() for f in frames)
        _run(cmd, raw, "encoding the MP4")
        return out.read_bytes()


def encode_gif(frames: Sequence[Image.Image], fps: int, *, loop: bool = True) -> bytes:
    """Animated GIF: one palette for the whole clip (built from a sample of frames, so colours do
    not flicker between frames), Floyd-Steinberg dither, frame-difference optimisation."""
    _check_frames(frames, fps)
    rgb = [f.convert("RGB") for f in frames]
    w, h = rgb[0].size
    # palette source: up to 16 evenly spaced frames, side by side at a reduced size
    picks = sorted({int(round(i)) for i in np.linspace(0, len(rgb) - 1, min(16, len(rgb)))})
    tw, th = max(1, min(w, 160)), max(1, min(h, 160))
    sheet = Image.new("RGB", (tw * len(picks), th))
    for j, i in enumerate(picks):
        sheet.paste(rgb[i].resize((tw, th), Image.Resampling.BOX), (j * tw, 0))
    palette = sheet.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized = [f.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for f in rgb]
    import io

    buf = io.BytesIO()
    extra: dict[str, Any] = {"loop": 0} if loop else {}
    # GIF delays are in 1/100 s: durations are rounded there (24 fps plays at ~25)
    quantized[0].save(buf, format="GIF", save_all=True, append_images=quantized[1:],
                      duration=int(round(1000 / fps)), optimize=False, disposal=1, **extra)
    return buf.getvalue()


def _run(cmd: list[str], stdin: bytes | None, what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InvalidInputError(f"ffmpeg timed out {what}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InvalidInputError(f"ffmpeg failed {what}: {detail[-1] if detail else 'no message'}")
    return proc


def probe(mp4: bytes) -> dict[str, Any]:
    """What an MP4 holds: {codec, pix_fmt, width, height, fps, frames, duration, has_audio,
    audio_codec}. Frames are counted by demuxing (no decode)."""
    if not mp4:
        raise InvalidInputError("empty video")
    with tempfile.TemporaryDirectory(prefix="echo-probe-") as tmp:
        path = Path(tmp) / "in.mp4"
        path.write_bytes(mp4)
        proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path), "-map", "0:v:0",
                               "-c", "copy", "-f", "null", "-progress", "pipe:1", "-nostats", "-"],
                              capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    info = proc.stderr.decode("utf-8", "replace")
    video = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+).*?, ([\d.]+) fps", info)
    if proc.returncode != 0 or video is None:
        raise InvalidInputError("not a readable video")
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+)", info)
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info)
    frames = re.findall(r"^frame=(\d+)", proc.stdout.decode("utf-8", "replace"), re.MULTILINE)
    return {
        "codec": video.group(1),
        "pix_fmt": video.group(2),
        "width": int(video.group(3)),
        "height": int(video.group(4)),
        "fps": float(video.group(5)),
        "frames": int(frames[-1]) if frames else 0,
        "duration": (int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))) if dur else 0.0,
        "has_audio": audio is not None,
        "audio_codec": audio.group(1) if audio else None,
    }


def decode_frames(mp4: bytes) -> list[np.ndarray]:
    """The MP4's frames as RGB uint8 arrays (for checks; decodes everything)."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory(prefix="echo-decode-") as tmp:
        path = Path(tmp) / "in.mp4"
        path.write_bytes(mp4)
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        return [np.frombuffer(b, np.uint8).reshape(h, w, 3).copy() for b in reader]


def poster_index(frames: Sequence[Image.Image]) -> int:
    """The frame that best stands for the clip: most detail (gradient energy), contrast and colour
    (Hasler-Süsstrunk colourfulness), each relative to the clip's best, with a slight preference
    for the middle; crossfade frames (soft, low contrast) rarely win. Ties go to the earlier frame."""
    if not frames:
        raise InvalidInputError("no frames to choose a poster from")
    scores = []
    for f in frames:
        small = np.asarray(f.convert("RGB").resize((96, 96), Image.Resampling.BOX), np.float32) / 255.0
        lum = small @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        grad = float(np.mean(np.abs(np.diff(lum, axis=0))) + np.mean(np.abs(np.diff(lum, axis=1))))
        rg = small[..., 0] - small[..., 1]
        yb = 0.5 * (small[..., 0] + small[..., 1]) - small[..., 2]
        colour = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
        scores.append((grad, float(lum.std()), colour))
    arr = np.asarray(scores, np.float64)
    arr /= np.maximum(arr.max(axis=0), 1e-9)
    n = len(frames)
    centre = 1.0 - 0.15 * np.abs(np.arange(n) - (n - 1) / 2) / max(1.0, (n - 1) / 2)
    total = (arr[:, 0] + 0.6 * arr[:, 1] + 0.6 * arr[:, 2]) * centre
    return int(np.argmax(np.round(total, 9)))
