"""Audio for video sync: load a track, find its onsets, beats and loudness, and turn them into the
per-frame drive `render/backends/procedural/animate.frame_params` understands.

NumPy/SciPy only (no librosa/numba): onsets are peaks of the spectral flux of a log-compressed
short-time spectrum (23 ms windows, 5.8 ms hop) over an adaptive threshold (local median + a share
of the local spread and of the track's strongest rise); the tempo is the autocorrelation peak of the flux under a broad prior around
120 BPM; the beat grid is the tempo's phase that best matches the flux, each grid beat snapped to
an onset close to it. WAV is read with scipy; anything else (MP3, FLAC, M4A...) is decoded to PCM on
a pipe by the ffmpeg binary imageio-ffmpeg bundles.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echo_pipeline.errors import InvalidInputError

DECODE_RATE = 22050  # what non-WAV input is decoded to (plenty for onsets and loudness)
MIN_SECONDS = 0.1
SILENCE = 1e-4  # peak amplitude (-80 dBFS) below which a track counts as silent


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples in -1..1, sample rate) of an audio file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"audio file not found: {path}")
    samples: np.ndarray | None = None
    sr = 0
    if path.suffix.lower() in (".wav", ".wave"):
        samples, sr = _read_wav(path)
    if samples is None:
        samples, sr = _decode_ffmpeg(path)
    if samples.size < MIN_SECONDS * sr:
        raise InvalidInputError(f"audio file {path.name} is empty or shorter than {MIN_SECONDS} s")
    if not np.all(np.isfinite(samples)):
        raise InvalidInputError(f"audio file {path.name} holds invalid samples")
    if float(np.max(np.abs(samples))) < SILENCE:
        raise InvalidInputError(f"audio file {path.name} is silent: nothing to sync the video to")
    return samples, sr


def _read_wav(path: Path) -> tuple[np.ndarray | None, int]:
    """scipy's WAV reader (PCM 8/16/24/32-bit, float); None for WAVs it cannot read (ffmpeg then tries)."""
    import warnings

    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            sr, data = wavfile.read(str(path))
    except (ValueError, OSError, EOFError):
        return None, 0
    data = np.asarray(data)
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    else:
        x = data.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    return np.clip(x, -1.0, 1.0).astype(np.float32), int(sr)


def _decode_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    from echo_pipeline.media.video import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-vn",
           "-ac", "1", "-ar", str(DECODE_RATE), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InvalidInputError(f"decoding {path.name} timed out") from exc
    if proc.returncode != 0 or not proc.stdout:
        raise InvalidInputError(f"cannot read audio file {path.name}: not a supported audio format")
    return np.frombuffer(proc.stdout, np.float32).copy(), DECODE_RATE


@dataclass(frozen=True)
class AudioAnalysis:
    """What the video syncs to. Times in seconds; per-frame lists have one entry per video frame."""

    sample_rate: int
    duration_s: float
    fps: int
    frames: int
    tempo_bpm: float  # 0 when there are too few onsets to have a tempo
    onsets_s: list[float] = field(default_factory=list)
    onset_strength: list[float] = field(default_factory=list)  # 0..1, relative to the strongest
    beats_s: list[float] = field(default_factory=list)
    onset_frames: list[int] = field(default_factory=list)
    beat_frames: list[int] = field(default_factory=list)
    envelope: list[float] = field(default_factory=list)  # RMS loudness per frame, 0..1 (dB-scaled)

    def summary(self) -> dict[str, Any]:
        """A small JSON-able record for lineage (counts and tempo, not the per-frame lists)."""
        return {"duration_s": round(self.duration_s, 3), "sample_rate": self.sample_rate,
                "tempo_bpm": round(self.tempo_bpm, 2), "onsets": len(self.onsets_s), "beats": len(self.beats_s),
                "first_beats_s": [round(b, 3) for b in self.beats_s[:8]]}


def _spectral_flux(samples: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Onset strength per hop (half-wave rectified rise of the log spectrum) and the hop in seconds."""
    n_fft = 1 << int(round(math.log2(0.023 * sr)))
    hop = n_fft // 4
    # reflected lead-in: zeros before the first sample would make the track's start an onset
    lead = samples[1:n_fft // 2 + 1][::-1] if samples.size > n_fft // 2 else np.zeros(n_fft // 2, np.float32)
    pad = np.concatenate([lead, samples, np.zeros(n_fft, np.float32)]).astype(np.float32)
    n = 1 + (pad.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(pad[idx] * np.hanning(n_fft).astype(np.float32), axis=1))
    logspec = np.log1p(100.0 * spec)
    flux = np.maximum(np.diff(logspec, axis=0, prepend=logspec[:1]), 0.0).sum(axis=1)
    return flux.astype(np.float64), hop / sr


def _pick_peaks(flux: np.ndarray, hop_s: float) -> np.ndarray:
    """Indices of onset peaks: local maxima (+-50 ms) above the adaptive threshold, >= 50 ms apart."""
    from scipy import ndimage

    if not np.any(flux > 0):
        return np.zeros(0, int)
    win = max(3, int(round(0.5 / hop_s)) | 1)
    med = ndimage.median_filter(flux, win, mode="nearest")
    spread = ndimage.uniform_filter(np.abs(flux - med), win, mode="nearest")
    novelty = flux - med  # rise above the local level: a steady noise floor is no onset
    thresh = 1.5 * spread + 0.12 * float(max(novelty.max(), 0.0))
    local = ndimage.maximum_filter(flux, max(3, int(round(0.1 / hop_s)) | 1), mode="nearest")
    peaks = np.nonzero((flux >= local) & (novelty > thresh))[0]
    keep: list[int] = []
    for p in peaks:
        if not keep or (p - keep[-1]) * hop_s >= 0.05:
            keep.append(int(p))
    return np.asarray(keep, int)


def _tempo(flux: np.ndarray, hop_s: float) -> float:
    """BPM: the flux autocorrelation's best lag in 50..220 BPM, weighted by a log-normal prior at 120."""
    x = flux - flux.mean()
    if not np.any(x):
        return 0.0
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * x.size)) ** 2)[: x.size]
    lags = np.arange(x.size)
    lo, hi = int(60 / 220 / hop_s), min(x.size - 1, int(60 / 50 / hop_s))
    if hi <= lo:
        return 0.0
    bpm = 60.0 / (lags[lo:hi] * hop_s)
    prior = np.exp(-0.5 * (np.log2(bpm / 120.0) / 0.9) ** 2)
    best = lo + int(np.argmax(ac[lo:hi] * prior))
    # parabolic refinement of the peak lag
    if lo < best < hi - 1:
        a, b, c = ac[best - 1], ac[best], ac[best + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom else 0.0
    else:
        shift = 0.0
    return float(60.0 / ((best + shift) * hop_s))


def _beat_grid(flux: np.ndarray, hop_s: float, tempo: float, onsets: np.ndarray, duration: float) -> list[float]:
    """Beats: the tempo's grid at the phase that collects most flux, each snapped to an onset within
    15% of a beat; a grid beat with no onset near it stays on the grid, but only between the first
    and the last onset (no beats in a silent intro or tail)."""
    period = 60.0 / tempo
    phases = np.arange(0.0, period, hop_s)
    best, best_sum = 0.0, -1.0
    for ph in phases:
        idx = np.round((np.arange(ph, duration, period)) / hop_s).astype(int)
        total = float(flux[idx[idx < flux.size]].sum())
        if total > best_sum + 1e-12:
            best, best_sum = float(ph), total
    beats = []
    for b in np.arange(best, duration, period):
        if onsets.size:
            j = int(np.argmin(np.abs(onsets - b)))
            if abs(onsets[j] - b) <= 0.15 * period:
                b = float(onsets[j])
            elif not onsets[0] < b < onsets[-1]:
                continue
        beats.append(round(float(b), 4))
    return beats


def analyze(samples: np.ndarray, sr: int, *, fps: int, frames: int) -> AudioAnalysis:
    """Onsets, tempo, beats and the per-frame loudness envelope of `samples` for a video of `frames`
    frames at `fps` (frame i is shown from i/fps; an event at t lands on frame round(t*fps))."""
    samples = np.asarray(samples, np.float32).ravel()
    if sr <= 0 or samples.size < MIN_SECONDS * sr:
        raise InvalidInputError("audio is empty or too short to analyse")
    if fps < 1 or frames < 1:
        raise InvalidInputError("fps and frames must be positive")
    duration = samples.size / sr
    flux, hop_s = _spectral_flux(samples, sr)
    peaks = _pick_peaks(flux, hop_s)
    onsets = peaks * hop_s
    strength = flux[peaks] / float(flux[peaks].max()) if peaks.size else np.zeros(0)
    tempo = _tempo(flux, hop_s) if peaks.size >= 4 else 0.0
    beats = _beat_grid(flux, hop_s, tempo, onsets, duration) if tempo > 0 else [round(float(t), 4) for t in onsets]

    # RMS per video frame, in dB relative to the loudest frame: 0 at -40 dB and below, 1 at the peak
    edges = np.minimum((np.arange(frames + 1) / fps * sr).astype(int), samples.size)
    rms = np.array([math.sqrt(float(np.mean(samples[a:b] ** 2))) if b > a else 0.0
                    for a, b in zip(edges[:-1], edges[1:], strict=True)])
    ref = float(rms.max()) if rms.size and rms.max() > 0 else 1.0
    env = np.clip(1.0 + 20.0 * np.log10(np.maximum(rms, 1e-9) / ref) / 40.0, 0.0, 1.0)

    def to_frames(times) -> list[int]:
        return sorted({int(round(t * fps)) for t in times if round(t * fps) < frames})

    return AudioAnalysis(
        sample_rate=int(sr), duration_s=float(duration), fps=int(fps), frames=int(frames), tempo_bpm=float(tempo),
        onsets_s=[round(float(t), 4) for t in onsets], onset_strength=[round(float(s), 4) for s in strength],
        beats_s=beats, onset_frames=to_frames(onsets), beat_frames=to_frames(beats),
        envelope=[round(float(e), 4) for e in env],
    )


def drive_from_audio(analysis: AudioAnalysis, frames: int, *, cut_every: int = 4,
                     min_cut_s: float = 1.5) -> list[dict[str, Any]]:
    """Per-frame drive dicts for `animate.frame_params`: a zoom pulse on every onset (full on beats,
    by strength otherwise) decaying over ~0.12 s, the palette phase stepping 1/8 turn on every beat,
    a cut on every `cut_every`-th beat (at least `min_cut_s` apart, never on frame 0), and the
    loudness envelope as `energy`."""
    fps = analysis.fps
    decay = max(0.7, 0.12 * fps)  # frames
    beat_set = set(analysis.beat_frames)
    pulse = np.zeros(frames)
    for t, s in zip(analysis.onsets_s, analysis.onset_strength, strict=True):
        f = int(round(t * fps))
        if f >= frames:
            continue
        amp = 1.0 if f in beat_set else 0.35 + 0.4 * s
        tail = np.arange(frames - f)
        pulse[f:] = np.maximum(pulse[f:], amp * np.exp(-tail / decay))
    for f in analysis.beat_frames:
        if f < frames:
            pulse[f] = max(pulse[f], 1.0)
    shift = np.zeros(frames)
    cuts = np.zeros(frames, bool)
    last_cut = -1e9
    for n, f in enumerate(analysis.beat_frames):
        if f >= frames:
            break
        shift[f:] += 0.125
        if cut_every and n % cut_every == cut_every - 1 and f > 0 and (f - last_cut) / fps >= min_cut_s:
            cuts[f], last_cut = True, f
    # energy: the envelope with an instant attack and a ~0.25 s release (a VU meter), so loudness
    # lifts the light without flickering frame to frame
    raw = list(analysis.envelope) + [0.0] * max(0, frames - len(analysis.envelope))
    release = math.exp(-1.0 / max(1.0, 0.25 * fps))
    env, level = [], 0.0
    for e in raw[:frames]:
        level = max(float(e), level * release)
        env.append(level)
    return [{"pulse": round(float(pulse[i]), 4), "shift": round(float(shift[i]), 4), "cut": bool(cuts[i]),
             "energy": round(env[i], 4)} for i in range(frames)]
