"""`ProceduralBackend`: the offline default renderer (generative art from prompt + seed, no weights)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeGuard

from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendConfig,
    BackendDescription,
    ImageBackend,
    ParentImage,
    ProgressCallback,
    RenderedImage,
)
from echo_pipeline.render.backends.procedural import params as P
from echo_pipeline.render.backends.procedural import words
from echo_pipeline.render.requests import RenderRequest

PROCEDURAL_VERSION = P.PROCEDURAL_VERSION


def _info(params: dict[str, Any], prompt: str, **extra: Any) -> dict[str, Any]:
    """What the image is and which words made it: `words_used` / `words_ignored` (stop-words and
    numbers are neither), `motif_source` ("prompt": a family word chose the motif; "material": a
    material word did, as a `material` surface or, for pictures, the closest family; "seed": no word
    did, the seed drew it) and `notes` saying where the renderer only approximates what was asked."""
    used, ignored = words.report(prompt)
    material = params.get("material")
    motif = params["motif"]
    kind = params["motif_params"].get("kind") or params["motif_params"].get("style")
    notes = []
    if params.get("motif_source") == "seed":
        notes.append(f"no word named a motif the procedural renderer knows; the seed chose {motif}")
    if motif == "object" and "weapon" in params.get("kinds", []) and not any(
            k in params["kinds"] for k in words.OBJECTS):
        notes.append(f"no word named which weapon; the seed chose: {kind}")
    if motif == "object":
        pass  # the material colours the item's parts: nothing approximated
    elif material and motif == "material" and kind != material:
        notes.append(f"{material} was asked for; the surface drawn is {kind}")
    elif material and params.get("motif_source") == "material" and motif != "material":
        notes.append(f"{material} in a picture is approximated by the closest motif, {motif} ({kind}), in the "
                     f"{params['palette']['name']} palette; a texture (tiling, or the word 'texture') draws the "
                     f"{material} surface itself")
    elif material and motif != "material":
        notes.append(f"{material} only chose the {params['palette']['name']} palette: a family word chose {motif}")
    info = {
        "motif": params["motif"],
        "kind": params["motif_params"].get("kind") or params["motif_params"].get("style"),
        "palette": params["palette"]["name"],
        "effects": sorted(k for k, v in params["effects"].items() if v > 0),
        "words_used": used,
        "words_ignored": ignored,
        "motif_source": params.get("motif_source", "prompt"),
        "material": material,
        "notes": notes,
        "params": params,
    }
    info.update(extra)
    return info


class ProceduralBackend(ImageBackend):
    """Fractals, flow fields, waves, landscapes, patterns, skylines, nebulae, material surfaces and
    game-asset objects (swords, axes, shields...) from prompt words."""

    name = "procedural"
    capabilities = BackendCapabilities(
        txt2img=True, img2img=True, tiling=True, negative_prompt=True, min_side=64, max_side=2048, size_multiple=1,
        sampler=False,  # no denoising steps: the A1111 parameters must not claim a sampler, steps or CFG
    )

    def __init__(self, config: BackendConfig | None = None, *, workers: int | None = None) -> None:
        """`workers`: processes for batches of 3+ images (default: one per CPU core, at most 4;
        1 renders in this process). Images are deterministic either way. `config` is accepted for
        the common constructor; nothing in it applies (there is no model)."""
        super().__init__(config)
        self._description = BackendDescription(
            backend="procedural", model="echo-procedural", model_hash="", version=PROCEDURAL_VERSION
        )
        self.workers = max(1, min(os.cpu_count() or 1, 4) if workers is None else int(workers))
        # (request ids, pool, results) of a `prefetch` not yet consumed by `render`
        self._prefetched: tuple[list[str], ProcessPoolExecutor, Iterator[Any]] | None = None

    def describe(self) -> BackendDescription:
        return self._description

    @staticmethod
    def params_for(request: RenderRequest) -> dict[str, Any]:
        """The parameters a txt2img request is drawn from (what `info["params"]` records)."""
        return P.build_params(request.prompt, request.negative_prompt, request.seed, request.width, request.height,
                              request.tiling)

    def render(
        self, requests: Sequence[RenderRequest], progress: ProgressCallback | None = None
    ) -> Iterator[RenderedImage]:
        """Validate every request now (errors surface at the call, not at the first `next()`), then
        stream the images one by one."""
        requests = list(requests)
        self.check_requests(requests)
        return self._stream(requests, progress)

    def prefetch(self, requests: Sequence[RenderRequest]) -> None:
        """Start the worker processes on `requests` now (forked from the calling thread, before the
        caller imports or sets up more); `render` of the same requests then streams their results."""
        requests = list(requests)
        self.check_requests(requests)
        self.close()
        if self._pooled(len(requests)):
            pool = self._pool(len(requests))
            self._prefetched = ([r.request_id for r in requests], pool, pool.map(_render_one, requests, chunksize=1))

    def close(self) -> None:
        """Stop the workers of a prefetch that was not consumed."""
        if self._prefetched is not None:
            self._prefetched[1].shutdown(wait=False, cancel_futures=True)
            self._prefetched = None

    def _pooled(self, total: int) -> bool:
        """Whether `total` images render in worker processes. Not in a daemonic process: it may not
        have children (a Celery prefork worker running a step is one), so it renders them itself."""
        return self.workers > 1 and total >= 3 and not multiprocessing.current_process().daemon

    def _pool(self, total: int) -> ProcessPoolExecutor:
        # Rendering is pure NumPy per image: a process per core roughly multiplies throughput.
        return ProcessPoolExecutor(max_workers=min(self.workers, total), mp_context=multiprocessing.get_context("fork"),
                                   initializer=_die_with_parent, initargs=(os.getpid(),))

    def _stream(self, requests: list[RenderRequest], progress: ProgressCallback | None) -> Iterator[RenderedImage]:
        total = len(requests)
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] != [r.request_id for r in requests]:
            prefetched[1].shutdown(wait=False, cancel_futures=True)  # started for other requests
            prefetched = None
        if prefetched is not None or self._pooled(total):
            # `map` keeps request order and yields each image as soon as it and its predecessors are done.
            pool = prefetched[1] if prefetched is not None else self._pool(total)
            try:
                results = prefetched[2] if prefetched is not None else pool.map(_render_one, requests, chunksize=1)
                for done, (request, (params, image)) in enumerate(zip(requests, results, strict=True), start=1):
                    yield RenderedImage(request=request, image=image, info=_info(params, request.prompt))
                    if progress is not None:
                        progress(done, total)
            finally:
                # A consumer that stops early (Ctrl-C, SIGTERM, an error storing an image) must not wait
                # for every queued image to be rendered and thrown away: only the ones in progress finish.
                pool.shutdown(wait=True, cancel_futures=True)
            return
        for done, request in enumerate(requests, start=1):
            params, image = _render_one(request)
            yield RenderedImage(request=request, image=image, info=_info(params, request.prompt))
            if progress is not None:
                progress(done, total)

    def refine(self, parent: ParentImage, request: RenderRequest,
               progress: ProgressCallback | None = None) -> RenderedImage:
        """img2img as a parameter-space variation of `parent` (strength 0 = same, 1 = free)."""
        self.check_requests([request])
        stored = parent.info.get("params") if isinstance(parent.info, dict) else None
        parent_params: dict[str, Any] = stored if _usable(stored) else self.params_for(parent.request)
        strength = 0.5 if request.strength is None else float(request.strength)
        params, changes = P.refine_params(
            parent_params, parent.request.prompt, request.prompt, request.negative_prompt, request.seed, strength,
            request.width, request.height, request.tiling,
        )
        image = P.render_params(params, request.width, request.height, request.tiling)
        info = _info(params, request.prompt, parent_params=parent_params, parent_artifact_id=parent.artifact_id,
                     strength=strength, changes=changes)
        if progress is not None:
            progress(1, 1)
        return RenderedImage(request=request, image=image, info=info)


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit when the parent dies (a SIGKILLed batch must not leave orphans
    rendering, or holding the project's lock). Linux: PR_SET_PDEATHSIG; elsewhere: a watcher thread."""
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _render_one(request: RenderRequest) -> tuple[dict[str, Any], Any]:
    """(params, image) for one txt2img request; module-level so worker processes can run it."""
    params = ProceduralBackend.params_for(request)
    return params, P.render_params(params, request.width, request.height, request.tiling)


def _usable(params: Any) -> TypeGuard[dict[str, Any]]:
    """Parent params from this backend's format (any version: refine re-renders them with this one)."""
    if not isinstance(params, dict):
        return False
    needed = ("motif", "seed", "palette", "effects", "motif_params", "detail", "light", "saturation")
    if any(key not in params for key in needed):
        return False
    from echo_pipeline.render.backends.procedural import motifs

    return params["motif"] in motifs.MOTIF_MODULES and isinstance(params["palette"], dict)
