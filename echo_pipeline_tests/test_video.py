"""Video: procedural frame parameters, MP4/GIF encoding, audio analysis and beat-synced frames."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from echo_pipeline.errors import InvalidInputError
from echo_pipeline.media import audio, video
from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendDescription,
    ImageBackend,
    ParentImage,
    ProgressCallback,
    RenderedImage,
)
from echo_pipeline.render.backends.procedural import animate
from echo_pipeline.render.backends.procedural import params as P
from echo_pipeline.render.backends.procedural.backend import ProceduralBackend
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.workflows import video_maker

SR = 22050
CLICKS = (0.5, 1.0, 1.25, 1.5)  # on the beat every 0.5 s, plus one off-beat


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float32)


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.mean(np.abs(_arr(a) - _arr(b))))


def _click_track(path: Path, times=CLICKS, seconds: float = 2.0) -> Path:
    x = np.random.default_rng(0).normal(0, 0.002, int(seconds * SR))
    n = int(0.03 * SR)
    burst = np.exp(-np.arange(n) / (0.004 * SR)) * np.sin(2 * np.pi * 1800 * np.arange(n) / SR)
    for t in times:
        i = int(t * SR)
        x[i:i + n] += 0.8 * burst[: x.size - i]
    wavfile.write(path, SR, (np.clip(x, -1, 1) * 32767).astype(np.int16))
    return path


@pytest.fixture
def frames8() -> list[Image.Image]:
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    out = []
    for i in range(8):  # smooth colour waves sliding right: content a video codec is made for
        rgb = np.stack([np.sin(2 * np.pi * (xx - i / 16)), np.cos(2 * np.pi * yy), np.sin(2 * np.pi * (xx + yy))], -1)
        out.append(Image.fromarray(((rgb * 0.5 + 0.5) * 255).astype(np.uint8)))
    return out


# ------------------------------------------------------------------------------------------ encoding
def test_mp4_probes_as_h264_with_the_right_frames_fps_and_size(frames8):
    mp4 = video.encode_mp4(frames8, 12)
    info = video.probe(mp4)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"], info["frames"]) == (64, 64, 8)
    assert info["fps"] == 12 and info["has_audio"] is False
    assert info["duration"] == pytest.approx(8 / 12, abs=0.05)
    assert mp4[4:8] == b"ftyp" and mp4.find(b"moov") < mp4.find(b"mdat")  # +faststart: index first
    # the same frames make the same bytes, and decode back close to the input
    assert video.encode_mp4(frames8, 12) == mp4
    decoded = video.decode_frames(mp4)
    assert len(decoded) == 8 and np.mean(np.abs(decoded[3].astype(float) - _arr(frames8[3]))) < 6


def test_gif_has_every_frame_and_loops(frames8):
    gif = video.encode_gif(frames8, 10)
    with Image.open(io.BytesIO(gif)) as im:
        assert getattr(im, "n_frames", 1) == 8 and im.info.get("loop") == 0 and im.info["duration"] == 100
    with Image.open(io.BytesIO(video.encode_gif(frames8, 10, loop=False))) as im:
        assert "loop" not in im.info
    assert video.encode_gif(frames8, 10) == gif


def test_encoding_rejects_bad_input(frames8):
    with pytest.raises(InvalidInputError, match="even"):
        video.encode_mp4([Image.new("RGB", (65, 64))] * 2, 12)
    with pytest.raises(InvalidInputError, match="frame 1"):
        video.encode_mp4([frames8[0], Image.new("RGB", (32, 32))], 12)
    with pytest.raises(InvalidInputError):
        video.encode_gif([], 12)
    with pytest.raises(InvalidInputError, match="readable"):
        video.probe(b"not a video at all")


def test_poster_prefers_a_detailed_frame():
    flat = Image.new("RGB", (64, 64), (40, 40, 40))
    busy = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert video.poster_index([flat, flat, busy, flat]) == 2


# ------------------------------------------------------------------------------------------ animate
def _keyframes(prompt: str, seeds=(1, 2, 3), size: int = 64) -> list[dict]:
    return [P.build_params(prompt, "", s, size, size, False) for s in seeds]


def test_walk_starts_and_rests_on_keyframes_and_loops_back():
    kfs = _keyframes("landscape sunset")
    walk = animate.frame_params(kfs, 9, motion="walk")
    first, last = animate.render_frame(walk[0], 64, 64), animate.render_frame(walk[-1], 64, 64)
    assert _diff(first, P.render_params(kfs[0], 64, 64, False)) == 0
    assert _diff(last, P.render_params(kfs[2], 64, 64, False)) == 0
    looped = animate.frame_params(kfs, 12, motion="walk", loop=True)
    imgs = [animate.render_frame(p, 64, 64) for p in looped]
    steps = [_diff(a, b) for a, b in zip(imgs, imgs[1:], strict=False)]
    # frame N would be frame 0: the wrap step is an ordinary step, not a jump to another picture
    wrap = _diff(imgs[-1], imgs[0])
    assert wrap <= np.median(steps)
    assert _diff(last, first) > 3 * wrap  # without loop the end is somewhere else


def test_frames_are_deterministic_and_json_safe():
    import json

    kfs = _keyframes("flow")
    a = animate.frame_params(kfs, 6, motion="auto", loop=True)
    b = animate.frame_params(_keyframes("flow"), 6, motion="auto", loop=True)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert np.array_equal(_arr(animate.render_frame(a[3], 64, 64)), _arr(animate.render_frame(b[3], 64, 64)))


def test_interpolation_keeps_counts_integer_and_angles_short():
    a = {"motif": "x", "motif_params": {"octaves": 2, "rotation": 0.1, "freq": 1.0, "max_iter": 100}}
    b = {"motif": "x", "motif_params": {"octaves": 3, "rotation": 2 * np.pi - 0.1, "freq": 3.0, "max_iter": 300}}
    mid = animate._mix(a, b, 0.5, "a")["motif_params"]
    assert mid["octaves"] == 2 and animate._mix(a, b, 0.5, "b")["motif_params"]["octaves"] == 3
    assert abs(mid["rotation"]) < 1e-9  # through 0, not the long way round through pi
    assert mid["freq"] == 2.0 and mid["max_iter"] == 200


def test_fractal_zoom_really_zooms():
    kfs = _keyframes("mandelbrot fractal", seeds=(4,))
    frames = animate.frame_params(kfs, 24, motion="zoom")
    widths = [p["motif_params"]["width"] for p in frames]
    assert all(b < a for a, b in zip(widths, widths[1:], strict=False))  # geometric: ratio is constant
    assert widths[-1] / widths[0] == pytest.approx(np.exp(-animate.ZOOM_RATE * 23), rel=1e-6)
    # the centre of frame k, blown up, resembles frame k+4 (zoom factor ~1.13) better than frame k does
    k, later = animate.render_frame(frames[10], 96, 96), animate.render_frame(frames[14], 96, 96)
    z = widths[10] / widths[14]
    c = 96 / z
    crop = k.resize((96, 96), Image.Resampling.BICUBIC, box=((96 - c) / 2, (96 - c) / 2, (96 + c) / 2, (96 + c) / 2))
    assert _diff(crop, later) < 0.75 * _diff(k, later)
    loop = animate.frame_params(kfs, 16, motion="zoom", loop=True)
    w = [p["motif_params"]["width"] for p in loop]
    assert w[0] == widths[0] and min(w) == w[8] and w[15] == pytest.approx(w[1], rel=1e-9)  # in and back out


def test_cycle_turns_the_palette_by_whole_turns_in_a_loop():
    kfs = _keyframes("waves ocean", seeds=(5,))
    frames = animate.frame_params(kfs, 8, motion="cycle", loop=True)
    imgs = [animate.render_frame(p, 64, 64) for p in frames]
    assert _diff(imgs[4], imgs[0]) > 3 * _diff(imgs[1], imgs[0]) / 2  # half a turn: far from the start
    assert _diff(imgs[7], imgs[0]) < 0.8 * _diff(imgs[4], imgs[0])  # coming back round


def test_frame_params_rejects_bad_input():
    kfs = _keyframes("flow", seeds=(1,))
    with pytest.raises(InvalidInputError, match="motion"):
        animate.frame_params(kfs, 4, motion="spin")
    with pytest.raises(InvalidInputError, match="drive"):
        animate.frame_params(kfs, 4, drive=[{}])
    with pytest.raises(InvalidInputError):
        animate.frame_params([], 4)


# ------------------------------------------------------------------------------------------ audio
def test_click_track_onsets_tempo_and_beats(tmp_path):
    samples, sr = audio.load_audio(_click_track(tmp_path / "clicks.wav"))
    assert sr == SR and samples.dtype == np.float32
    fps = 24
    a = audio.analyze(samples, sr, fps=fps, frames=48)
    assert len(a.onsets_s) == len(CLICKS)
    for found, click in zip(a.onsets_s, sorted(CLICKS), strict=True):
        assert abs(found - click) <= 1 / fps
    assert a.tempo_bpm == pytest.approx(120, rel=0.05)
    assert [round(b * 2) / 2 for b in a.beats_s] == [0.5, 1.0, 1.5]  # the off-beat is an onset, not a beat
    env = np.array(a.envelope)
    at_clicks = [round(t * fps) for t in CLICKS]
    assert len(env) == 48 and env.max() == 1.0 and env[at_clicks].min() > 0.8
    assert np.delete(env, at_clicks).max() < 0.3  # loud only where the clicks are
    drive = audio.drive_from_audio(a, 48)
    assert drive[12]["pulse"] == 1.0 and 0.3 < drive[30]["pulse"] < 1.0  # beats pulse fully, the off-beat less
    assert (drive[11]["shift"], drive[12]["shift"], drive[47]["shift"]) == (0.0, 0.125, 0.375)


def test_mp3_loads_through_ffmpeg(tmp_path):
    wav = _click_track(tmp_path / "clicks.wav")
    mp3 = tmp_path / "clicks.mp3"
    subprocess.run([video.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "libmp3lame",
                    "-b:a", "128k", str(mp3)], check=True)
    samples, sr = audio.load_audio(mp3)
    assert sr == audio.DECODE_RATE and abs(samples.size / sr - 2.0) < 0.1
    onsets = audio.analyze(samples, sr, fps=24, frames=48).onsets_s
    assert len(onsets) == len(CLICKS) and all(abs(o - c) <= 1 / 24 for o, c in zip(onsets, sorted(CLICKS), strict=True))


def test_bad_audio_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        audio.load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.mp3").write_bytes(b"\x00junk" * 50)
    with pytest.raises(InvalidInputError, match="cannot read"):
        audio.load_audio(tmp_path / "junk.mp3")
    wavfile.write(tmp_path / "silent.wav", SR, np.zeros(SR, np.int16))
    with pytest.raises(InvalidInputError, match="silent"):
        audio.load_audio(tmp_path / "silent.wav")
    wavfile.write(tmp_path / "empty.wav", SR, np.zeros(0, np.int16))
    with pytest.raises(InvalidInputError, match="empty"):
        audio.load_audio(tmp_path / "empty.wav")


# --------------------------------------------------------------------------------------- make_video
def _template(prompt: str, seed: int = 3) -> RenderRequest:
    return RenderRequest(prompt=prompt, seed=seed, width=64, height=64, media_type="video")


def test_procedural_video_is_deterministic_and_records_how_it_was_made():
    backend = ProceduralBackend(workers=1)
    calls: list[tuple[int, int]] = []
    a = video_maker.make_video(backend, _template("landscape"), frames=8, fps=8, loop=True,
                               progress=lambda d, t: calls.append((d, t)))
    b = video_maker.make_video(backend, _template("landscape"), frames=8, fps=8, loop=True)
    assert calls == [(i, 8) for i in range(1, 9)]
    assert all(np.array_equal(_arr(x), _arr(y)) for x, y in zip(a.frames, b.frames, strict=True))
    assert a.mp4 == b.mp4 and a.gif == b.gif
    info = a.info
    assert info["frames"] == 8 and info["fps"] == 8 and info["loop"] is True and len(info["keyframe_seeds"]) == 3
    assert info["keyframe_seeds"][0] == 3 and a.poster is a.frames[info["poster_index"]]
    kf_motifs = {P.build_params("landscape", "", s, 64, 64, False)["motif"] for s in info["keyframe_seeds"]}
    assert kf_motifs == {"landscape"}
    probed = video.probe(a.mp4)
    assert (probed["frames"], probed["fps"], probed["width"]) == (8, 8, 64)


def test_make_video_validates_up_front():
    backend = ProceduralBackend(workers=1)
    for kwargs, match in (({"frames": 1}, "frames"), ({"frames": 601}, "frames"), ({"fps": 0}, "fps"),
                          ({"fps": 61}, "fps"), ({"keyframes": 0}, "keyframes"), ({"motion": "x"}, "motion")):
        args = {"frames": 4, "fps": 8, "loop": False} | kwargs
        with pytest.raises(InvalidInputError, match=match):
            video_maker.make_video(backend, _template("flow"), **args)
    odd = RenderRequest(prompt="flow", seed=1, width=65, height=64)
    with pytest.raises(InvalidInputError, match="even"):
        video_maker.make_video(backend, odd, frames=4, fps=8, loop=False)
    with pytest.raises(InvalidInputError, match="audio"):
        video_maker.make_video(backend, _template("flow"), frames=4, fps=8, loop=False, audio_path="/nope.wav")


@pytest.mark.slow(seconds=6)
def test_beats_land_on_the_frames_of_the_clicks(tmp_path):
    """The issue's test: a video driven by a click track changes most within one frame of each click,
    and its MP4 carries the audio."""
    track = _click_track(tmp_path / "clicks.wav")
    fps, n = 12, 24
    result = video_maker.make_video(ProceduralBackend(workers=1), _template("fractal", seed=5), frames=n, fps=fps,
                                    loop=False, keyframes=2, audio_path=str(track))
    changes = np.array([_diff(a, b) for a, b in zip(result.frames, result.frames[1:], strict=False)])
    # change k is between frame k and k+1: a click at frame f shows as change f-1
    click_frames = [round(t * fps) for t in CLICKS]
    top = np.argsort(-changes)[: len(CLICKS)] + 1
    for f in top:
        assert min(abs(int(f) - c) for c in click_frames) <= 1, (sorted(top.tolist()), click_frames)
    probed = video.probe(result.mp4)
    assert probed["has_audio"] and probed["audio_codec"] == "aac" and probed["frames"] == n
    assert probed["duration"] == pytest.approx(n / fps, abs=0.1)
    assert result.info["audio"]["sha256"] and result.info["audio"]["analysis"]["onsets"] == len(CLICKS)


class FakeModelBackend(ImageBackend):
    """A txt2img + img2img backend without a model: flat colour from the seed, refine blends the
    parent towards the request's seed colour by `strength`. Records every call."""

    name = "fake"
    capabilities = BackendCapabilities(txt2img=True, img2img=True, min_side=64, max_side=512)

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="fake", model="fake-1")

    @staticmethod
    def colour(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).uniform(0, 255, 3)

    def render(self, requests: Sequence[RenderRequest], progress: ProgressCallback | None = None
               ) -> Iterator[RenderedImage]:
        for r in requests:
            self.calls.append(("render", r.seed))
            img = np.broadcast_to(self.colour(r.seed), (r.height, r.width, 3)).astype(np.uint8)
            yield RenderedImage(request=r, image=Image.fromarray(img), info={"seed": r.seed})

    def refine(self, parent: ParentImage, request: RenderRequest, progress: ProgressCallback | None = None
               ) -> RenderedImage:
        self.calls.append(("refine", request.seed, request.strength, parent.artifact_id))
        strength = float(request.strength or 0.0)
        mixed = _arr(parent.image) * (1 - strength) + self.colour(request.seed) * strength
        return RenderedImage(request=request, image=Image.fromarray(mixed.astype(np.uint8)))


def test_model_backend_frames_are_an_img2img_chain_between_keyframes():
    backend = FakeModelBackend()
    result = video_maker.make_video(backend, _template("a castle", seed=10), frames=7, fps=6, loop=False,
                                    keyframes=3)
    renders = [c for c in backend.calls if c[0] == "render"]
    refines = [c for c in backend.calls if c[0] == "refine"]
    assert renders == [("render", 10), ("render", 11), ("render", 12)]  # keyframes first, in one batch
    # frames 0, 3, 6 are the keyframes; the 4 in between are refines of the previous frame
    assert len(refines) == 4 and all(c[2] == video_maker.CHAIN_STRENGTH for c in refines)
    assert [c[1] for c in refines] == [11, 11, 12, 12]  # towards the next keyframe's seed
    assert [c[3] for c in refines] == ["video-frame-0", "video-frame-1", "video-frame-3", "video-frame-4"]
    col = [_arr(f)[0, 0] for f in result.frames]
    assert np.allclose(col[3], FakeModelBackend.colour(11).astype(np.uint8), atol=1)
    # the chain drifts from keyframe 0 towards keyframe 1
    d1 = [np.abs(c - FakeModelBackend.colour(11)).sum() for c in col[:4]]
    assert d1[0] > d1[1] > d1[2] > d1[3]
    assert result.info["method"] == "img2img-chain" and result.info["keyframe_seeds"] == [10, 11, 12]
    assert video.probe(result.mp4)["frames"] == 7
