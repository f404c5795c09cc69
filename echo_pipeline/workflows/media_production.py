"""Media production: the files of textures, videos, 3D models and interactive pieces.

The batch processor hands each media request here with its source artifacts already stored (see
`workflows/multi_modal.py` for what each kind is made from). Every kind returns a `MediaOutput`: the
PNG the artifact is catalogued under (texture: the albedo; video: the poster frame; 3D model: a
rendered preview; interactive: the first view, as the live renderer draws it), lineage details for
its record (`info`, with `inputs` naming the source artifacts by role) and the files written beside
it under `media/<artifact_id>/`. The media makers themselves are pure functions in
`echo_pipeline/media/` (and the procedural backend's `animate` and `live` modules); this module
only reads sources from the store and puts the pieces together.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from echo_pipeline.artifacts.records import ArtifactRecord
from echo_pipeline.artifacts.storage import ArtifactStore
from echo_pipeline.errors import InvalidInputError
from echo_pipeline.render.backends.base import ImageBackend, RenderedImage
from echo_pipeline.render.requests import RenderRequest

# (done, total) in frames or steps of one media artifact.
MediaProgress = Callable[[float, int], None]

TEXTURE_MAPS = ("height", "normal", "roughness")
PREVIEW_SIDE = 512


@dataclass
class MediaOutput:
    image: Image.Image  # the PNG the artifact is catalogued under
    info: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # name -> bytes, under media/<artifact_id>/


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _inputs(sources: dict[str, list[ArtifactRecord]]) -> dict[str, list[str]]:
    return {role: [r.artifact_id for r in records] for role, records in sources.items()}


class MediaProducer:
    def __init__(self, store: ArtifactStore, backend: ImageBackend):
        self.store = store
        self.backend = backend

    # -- textures ------------------------------------------------------------------------------
    def texture(self, rendered: RenderedImage) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A texture's derived maps (height, normal, roughness PNGs, all tileable) and its seam
        measure: (info with `seam` and `maps`, files)."""
        from echo_pipeline.media.texture_maps import NORMAL_CONVENTION, derive_maps, seam_measure

        params = rendered.info.get("params")
        # The material a procedural surface was drawn as tunes its maps (steel: smooth, stone: rough).
        kind = (params.get("motif_params", {}).get("kind")
                if isinstance(params, dict) and params.get("motif") == "material" else None)
        maps = derive_maps(rendered.image, kind=kind if isinstance(kind, str) else None)
        files = {f"{name}.png": png_bytes(maps[name]) for name in TEXTURE_MAPS}
        seam = seam_measure(rendered.image)
        info = {**rendered.info, "seam": {k: round(float(v), 4) for k, v in seam.items()},
                "maps": {"files": sorted(files), "normal_convention": NORMAL_CONVENTION}}
        return info, files

    # -- media made from sources ---------------------------------------------------------------
    def produce(self, request: RenderRequest, sources: dict[str, list[ArtifactRecord]],
                progress: MediaProgress | None = None) -> MediaOutput:
        kind = (request.media or {}).get("kind")
        makers = {"video": self._video, "3d_model": self._mesh, "interactive": self._interactive, "view": self._view}
        if kind not in makers:
            raise InvalidInputError(f"media kind {kind!r} is unknown (known: {', '.join(makers)})")
        output = makers[kind](request, sources, progress)
        output.info = {"media": kind, "inputs": _inputs(sources), **output.info}
        return output

    def _mesh(self, request: RenderRequest, sources: dict[str, list[ArtifactRecord]],
              progress: MediaProgress | None) -> MediaOutput:
        from echo_pipeline.media import mesh

        options = (request.media or {})["options"]
        concept = self.store.load_image(sources["concept"][0])
        texture = self.store.load_image(sources["texture"][0]) if sources.get("texture") else None
        if progress is not None:
            progress(0, 3)
        if options["method"] == "shap-e":
            from echo_pipeline.media.shap_e import shap_e_mesh

            model = os.environ.get("ECHO_SHAP_E_MODEL", "")
            if not model:
                raise InvalidInputError("3d_model method 'shap-e' needs ECHO_SHAP_E_MODEL (a local folder or hub "
                                        "id of a Shap-E img2img pipeline)")
            result = shap_e_mesh(concept, model, seed=request.seed)
        else:
            result = mesh.build_mesh(concept, texture, method=options["method"], resolution=options["resolution"])
        if progress is not None:
            progress(1, 3)
        files = {"model.glb": mesh.export_glb(result), **mesh.export_obj(result)}
        if progress is not None:
            progress(2, 3)
        side = min(PREVIEW_SIDE, max(request.width, request.height))
        preview = mesh.render_preview(result, size=(side, side))
        if progress is not None:
            progress(3, 3)
        return MediaOutput(image=preview, files=files, info={"mesh": {"method": result.method, **result.stats}})

    def _video(self, request: RenderRequest, sources: dict[str, list[ArtifactRecord]],
               progress: MediaProgress | None) -> MediaOutput:
        from echo_pipeline.workflows.video_maker import make_video

        options = dict((request.media or {})["options"])
        keyframes = sources["keyframes"]
        audio = options.get("audio")
        with tempfile.TemporaryDirectory(prefix="echo-audio-") as tmp:
            audio_path = None
            if audio:
                data = self.store.read_project_file(request.project, audio["path"])
                if data is None:
                    raise InvalidInputError(f"the audio track {audio['name']!r} is no longer in the project store")
                # Under the user's own file name: the record says "track.wav", not its content hash.
                name = os.path.basename(str(audio.get("name") or "")) or os.path.basename(audio["path"])
                audio_path = os.path.join(tmp, name)
                with open(audio_path, "wb") as handle:
                    handle.write(data)
            video = make_video(
                self.backend, request, frames=options["frames"], fps=options["fps"], loop=options["loop"],
                motion=options["motion"], audio_path=audio_path, progress=progress,
                keyframe_images=[RenderedImage(request=r.request, image=self.store.load_image(r), info=r.info)
                                 for r in keyframes],
            )
        files = {"video.mp4": video.mp4, "video.gif": video.gif}
        return MediaOutput(image=video.poster, files=files, info={"video": video.info})

    def _interactive(self, request: RenderRequest, sources: dict[str, list[ArtifactRecord]],
                     progress: MediaProgress | None) -> MediaOutput:
        from echo_pipeline.media.interactive import interactive_page
        from echo_pipeline.render.backends.procedural.backend import ProceduralBackend
        from echo_pipeline.render.backends.procedural.live import render_view, view_from_params

        source = sources["image"][0]
        params = source.info.get("params")
        if not isinstance(params, dict) or "motif_params" not in params:
            # A model backend's image: the live piece is drawn from the same prompt's procedural params.
            params = ProceduralBackend.params_for(source.request)
        view = view_from_params(params, request.width, request.height)
        page = interactive_page(view, title=request.source_prompt or request.prompt,
                                record={"artifact_id": request.request_id, "source": source.artifact_id,
                                        "prompt": request.prompt, "seed": request.seed})
        image = render_view(view)
        if progress is not None:
            progress(1, 1)
        return MediaOutput(image=image, files={"index.html": page},
                           info={"view": view.model_dump(mode="json"), "params": params})

    def _view(self, request: RenderRequest, sources: dict[str, list[ArtifactRecord]],
              progress: MediaProgress | None) -> MediaOutput:
        """A view kept in an interactive page, as the PNG the page showed (same algorithm in numpy)."""
        import json

        from echo_pipeline.render.backends.procedural.live import LiveView, render_view

        view = LiveView.model_validate_json(json.dumps((request.media or {})["options"]["view"]))
        image = render_view(view)
        if progress is not None:
            progress(1, 1)
        return MediaOutput(image=image, info={"view": view.model_dump(mode="json")})
