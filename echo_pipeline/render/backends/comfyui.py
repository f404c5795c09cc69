"""`ComfyUIBackend`: renders through a running ComfyUI server (see `comfyui_client` for the protocol).

Workflows are ComfyUI's *API format* (`{"3": {"class_type": "KSampler", "inputs": {...}}}`):

- Built-in templates `configs/comfyui/txt2img.json` and `img2img.json` (taken from
  `<config_dir>/comfyui/` when that folder exists, else from the checkout's `configs/comfyui/`).
- Or the user's own file (`BackendConfig.comfyui_workflow`; a folder there means its `txt2img.json`
  and `img2img.json`). The UI's saved format (top-level `nodes` and `links` arrays) is rejected with a
  hint to export the API format.

A string input whose whole value is a placeholder (`"{{seed}}"`) is replaced by the typed value;
a placeholder inside a longer string (`"photo of {{prompt}}"`) is substituted as text. Placeholders:
prompt, negative, seed, steps, cfg, sampler, scheduler, width, height, checkpoint, denoise, image.
A workflow without placeholders names its nodes in `BackendConfig.comfyui_nodes` (roles prompt,
negative, seed, output, image -> node id): `inputs.text`, `inputs.seed` / `inputs.noise_seed` and
`inputs.image` are set there, and the images of the `output` node are returned (else those of every
output node). Such a workflow keeps its own steps, CFG, size and sampler.

The checkpoint is `BackendConfig.model`, else the first one the server lists
(GET /object_info/CheckpointLoaderSimple); it is the model in `describe()` (a workflow without a
`{{checkpoint}}` placeholder is described by its file name instead). A1111 sampler names map to
ComfyUI's sampler_name/scheduler pairs (`SAMPLERS`); an unknown one fails `check_requests`.

Each image keeps ComfyUI's own PNG text chunks (`prompt`, and `workflow` when the server writes one)
in `RenderedImage.png_text`. Progress is in sampler steps over the whole call.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from echo_pipeline.errors import BackendUnavailableError, EchoError, InvalidInputError, NotFoundError
from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendConfig,
    BackendDescription,
    ImageBackend,
    ParentImage,
    ProgressCallback,
    RenderedImage,
)
from echo_pipeline.render.backends.comfyui_client import (
    ComfyUIClient,
    ComfyUIExecutionError,
    ProgressEvent,
    PromptResult,
)
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.settings import REPO_CONFIG_DIR

COMFYUI_VERSION = "comfyui-api-1"
PLACEHOLDERS = ("prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "width", "height",
                "checkpoint", "denoise", "image")
ROLES = ("prompt", "negative", "seed", "output", "image")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_RESERVED_PNG_KEYS = {"parameters", "echo"}  # written by the artifact store itself

# A1111 sampler name (matched case-insensitively) -> (ComfyUI sampler_name, scheduler). " Karras" / " Exponential"
# suffixes pick that scheduler for any of them.
SAMPLERS: dict[str, tuple[str, str]] = {
    "Euler a": ("euler_ancestral", "normal"),
    "Euler": ("euler", "normal"),
    "LMS": ("lms", "normal"),
    "Heun": ("heun", "normal"),
    "DPM2": ("dpm_2", "normal"),
    "DPM2 a": ("dpm_2_ancestral", "normal"),
    "DPM++ 2S a": ("dpmpp_2s_ancestral", "normal"),
    "DPM++ 2M": ("dpmpp_2m", "normal"),
    "DPM++ SDE": ("dpmpp_sde", "normal"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", "normal"),
    "DPM++ 3M SDE": ("dpmpp_3m_sde", "normal"),
    "DPM fast": ("dpm_fast", "normal"),
    "DPM adaptive": ("dpm_adaptive", "normal"),
    "DDIM": ("ddim", "ddim_uniform"),
    "UniPC": ("uni_pc", "normal"),
    "LCM": ("lcm", "normal"),
}
_SAMPLERS_LOWER = {name.lower(): pair for name, pair in SAMPLERS.items()}
_SCHEDULER_SUFFIXES = {"karras": "karras", "exponential": "exponential", "sgm uniform": "sgm_uniform"}
_NATIVE_SAMPLERS = {sampler for sampler, _ in SAMPLERS.values()} | {"euler_cfg_pp", "ddpm", "ipndm", "deis"}


def comfy_sampler(name: str) -> tuple[str, str] | None:
    """('dpmpp_2m', 'karras') for 'DPM++ 2M Karras'; ComfyUI's own names pass through; None if unknown."""
    key = " ".join(name.lower().split())
    if key in _SAMPLERS_LOWER:
        return _SAMPLERS_LOWER[key]
    if key in _NATIVE_SAMPLERS:
        return key, "normal"
    for suffix, scheduler in _SCHEDULER_SUFFIXES.items():
        base = key.removesuffix(" " + suffix)
        if base != key:
            found = comfy_sampler(base)
            return (found[0], scheduler) if found else None
    return None


@dataclass
class Workflow:
    """A loaded API-format graph: where it came from, its placeholders and its role -> node map."""

    name: str
    graph: dict[str, Any]
    placeholders: set[str] = field(default_factory=set)
    nodes: dict[str, str] = field(default_factory=dict)

    def takes(self, what: str) -> bool:
        """Whether the workflow has somewhere to put `what` (a placeholder or a mapped node)."""
        return what in self.placeholders or what in self.nodes


def load_workflow(path: Path, nodes: dict[str, str] | None = None, name: str | None = None) -> Workflow:
    """Read and check an API-format workflow file (and its role -> node id map); `name` is how
    messages and lineage call it (default: the path)."""
    if not path.is_file():
        raise NotFoundError(f"ComfyUI workflow {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"ComfyUI workflow {str(path)!r} cannot be read: {exc}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"ComfyUI workflow {str(path)!r} is not valid JSON: {exc}") from exc
    return check_workflow(data, name or str(path), nodes)


def check_workflow(data: Any, name: str, nodes: dict[str, str] | None = None) -> Workflow:
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list):
        raise InvalidInputError(
            f"ComfyUI workflow {name!r} is in the UI format (nodes/links), not the API format; in ComfyUI use "
            "Workflow > Export (API) (older versions: enable dev mode, then 'Save (API Format)') and use that file"
        )
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # a saved POST /prompt body
    if not isinstance(data, dict) or not data:
        raise InvalidInputError(f"ComfyUI workflow {name!r} is not an API-format graph (an object of nodes)")
    for node_id, node in data.items():
        if not (isinstance(node, dict) and isinstance(node.get("class_type"), str)
                and isinstance(node.get("inputs", {}), dict)):
            raise InvalidInputError(f"ComfyUI workflow {name!r}: node {node_id!r} is not an API-format node "
                                    "({\"class_type\": ..., \"inputs\": {...}})")
    found: set[str] = set()
    for node in data.values():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, str):
                found.update(_PLACEHOLDER.findall(value))
    unknown = sorted(found - set(PLACEHOLDERS))
    if unknown:
        raise InvalidInputError(f"ComfyUI workflow {name!r} uses unknown placeholder {{{{{unknown[0]}}}}}; "
                                f"known: {', '.join(PLACEHOLDERS)}")
    mapping = {str(role): str(node_id) for role, node_id in (nodes or {}).items()}
    for role, node_id in mapping.items():
        if role not in ROLES:
            raise InvalidInputError(f"comfyui_nodes has unknown role {role!r}; roles: {', '.join(ROLES)}")
        if node_id not in data:
            raise InvalidInputError(f"comfyui_nodes maps {role} to node {node_id!r}, which is not in workflow "
                                    f"{name!r} (nodes: {', '.join(sorted(data, key=_sort_key))})")
        inputs = data[node_id].get("inputs") or {}
        needs = {"prompt": ("text",), "negative": ("text",), "seed": ("seed", "noise_seed"), "image": ("image",)}
        if role in needs and not any(key in inputs for key in needs[role]):
            raise InvalidInputError(
                f"comfyui_nodes maps {role} to node {node_id} ({data[node_id]['class_type']}), which has no "
                f"{' or '.join(repr(k) for k in needs[role])} input"
            )
    workflow = Workflow(name=name, graph=data, placeholders=found, nodes=mapping)
    if not workflow.takes("prompt"):
        raise InvalidInputError(f"ComfyUI workflow {name!r} has no {{{{prompt}}}} placeholder and comfyui_nodes "
                                "names no prompt node, so the prompt would be ignored")
    return workflow


def workflow_hash(*workflows: Workflow) -> str:
    """10 hex characters of sha256 over the graphs and role -> node maps, key order ignored."""
    canonical = json.dumps([{"graph": w.graph, "nodes": w.nodes} for w in workflows], sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]


def _sort_key(node: str) -> tuple[int, str]:
    return (0, f"{int(node):012d}") if node.isdigit() else (1, node)


def fill(workflow: Workflow, values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the graph with placeholders replaced and mapped node inputs set."""
    graph = copy.deepcopy(workflow.graph)
    for node in graph.values():
        inputs = node.setdefault("inputs", {})
        for key, value in list(inputs.items()):
            if not isinstance(value, str):
                continue
            whole = _PLACEHOLDER.fullmatch(value.strip())
            if whole:
                inputs[key] = values[whole.group(1)]
            elif "{{" in value:
                inputs[key] = _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
    for role, node_id in workflow.nodes.items():
        inputs = graph[node_id].setdefault("inputs", {})
        if role in ("prompt", "negative"):
            text = values["prompt" if role == "prompt" else "negative"]
            for key in ("text", "text_g", "text_l"):
                if key in inputs:
                    inputs[key] = text
        elif role == "seed":
            for key in ("seed", "noise_seed"):
                if key in inputs:
                    inputs[key] = values["seed"]
        elif role == "image":
            inputs["image"] = values["image"]
    return graph


class ComfyUIBackend(ImageBackend):
    """Images from a ComfyUI server (txt2img and img2img through API-format workflows)."""

    name = "comfyui"
    capabilities = BackendCapabilities(
        txt2img=True, img2img=True, tiling=False, negative_prompt=True, sampler=True,
        min_side=64, max_side=2048, size_multiple=8,
    )

    def __init__(self, config: BackendConfig | None = None, *, tries: int = 3, backoff_s: float = 0.5,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0, poll_interval_s: float = 0.25,
                 poll_max_s: float = 2.0, probe_timeout_s: float = 3.0) -> None:
        """Keyword options tune the client (retries, timeouts, /history polling); no network here."""
        super().__init__(config)
        self._client_options: dict[str, Any] = dict(
            tries=tries, backoff_s=backoff_s, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            poll_interval_s=poll_interval_s, poll_max_s=poll_max_s,
        )
        self.probe_timeout_s = probe_timeout_s
        self._client: ComfyUIClient | None = None
        self._workflows: dict[str, Workflow] = {}
        self._checkpoint: str | None = None

    # -- configuration --------------------------------------------------------------------------

    @property
    def client(self) -> ComfyUIClient:
        if self._client is None:
            self._client = ComfyUIClient(self.config.comfyui_url, timeout_s=self.config.comfyui_timeout_s,
                                         **self._client_options)
        return self._client

    def template_dir(self) -> Path:
        if self.config.config_dir:
            folder = Path(self.config.config_dir) / "comfyui"
            if folder.is_dir():
                return folder
        return REPO_CONFIG_DIR / "comfyui"

    def workflow(self, kind: str) -> Workflow:
        """The txt2img or img2img workflow, loaded and checked once."""
        if kind not in self._workflows:
            user = self.config.comfyui_workflow
            if user:
                path = Path(user).expanduser()
                if not path.exists() and not path.is_absolute() and self.config.config_dir:
                    path = Path(self.config.config_dir) / path
                if path.is_dir():
                    path = path / f"{kind}.json"
                self._workflows[kind] = load_workflow(path, self.config.comfyui_nodes)
            else:
                self._workflows[kind] = load_workflow(self.template_dir() / f"{kind}.json", name=f"{kind}.json")
        return self._workflows[kind]

    def _described(self) -> Workflow:
        """The workflow `describe` names (the txt2img one; a single user file serves both kinds)."""
        workflow = self.workflow("txt2img")
        if self.config.model and not workflow.takes("checkpoint"):
            raise InvalidInputError(f"model {self.config.model!r} cannot be used: ComfyUI workflow {workflow.name!r} "
                                    "has no {{checkpoint}} placeholder (it picks its own model)")
        return workflow

    def _txt2img(self) -> Workflow:
        workflow = self._described()
        if workflow.takes("image"):
            raise InvalidInputError(f"ComfyUI workflow {workflow.name!r} takes an input image, so it cannot render "
                                    "txt2img; refine with it, or use a workflow without {{image}}")
        return workflow

    def checkpoint(self) -> str:
        """config.model, else the first checkpoint the server lists (asked once)."""
        if self._checkpoint is None:
            if self.config.model:
                self._checkpoint = self.config.model
            else:
                names = self.client.checkpoints()
                if not names:
                    raise BackendUnavailableError(
                        f"ComfyUI server at {self.client.url} lists no checkpoints (CheckpointLoaderSimple); "
                        "put one in its models/checkpoints folder or name one as the model (comfyui:<name>)"
                    )
                self._checkpoint = names[0]
        return self._checkpoint

    # -- protocol -------------------------------------------------------------------------------

    @classmethod
    def check_requests(cls, requests: Sequence[RenderRequest]) -> None:
        super().check_requests(requests)
        for request in requests:
            if comfy_sampler(request.sampler) is None:
                raise InvalidInputError(f"sampler {request.sampler!r} has no ComfyUI equivalent; known: "
                                        f"{', '.join(SAMPLERS)} (each also with ' Karras'), or ComfyUI's own names")

    def describe(self) -> BackendDescription:
        """Model = the checkpoint (may ask the server which it has) or the workflow's file name;
        version = ours plus a hash of the workflow graph and node map, so editing a workflow (a
        template in configs/comfyui/ or your own file) makes new images instead of "already stored"."""
        workflow = self._described()
        model = self.checkpoint() if workflow.takes("checkpoint") else workflow.name
        graphs = [workflow]
        with contextlib.suppress(EchoError):  # an img2img workflow is optional (txt2img-only setups)
            graphs.append(self.workflow("img2img"))
        return BackendDescription(backend="comfyui", model=model, model_hash="",
                                  version=f"{COMFYUI_VERSION}+{workflow_hash(*graphs)}")

    def check_usable(self) -> str | None:
        try:
            self._described()
        except (InvalidInputError, NotFoundError) as exc:
            return exc.message
        return self.client.probe(self.probe_timeout_s)

    def render(self, requests: Sequence[RenderRequest],
               progress: ProgressCallback | None = None) -> Iterator[RenderedImage]:
        """Check the requests and the workflow now, then queue one prompt per request and stream."""
        requests = list(requests)
        self.check_requests(requests)
        workflow = self._txt2img()
        return self._stream(requests, workflow, progress)

    def _stream(self, requests: list[RenderRequest], workflow: Workflow,
                progress: ProgressCallback | None) -> Iterator[RenderedImage]:
        meter = _StepMeter(progress, sum(r.steps for r in requests))
        for request in requests:
            yield self._run(workflow, request, meter, denoise=1.0, image=None)

    def refine(self, parent: ParentImage, request: RenderRequest,
               progress: ProgressCallback | None = None) -> RenderedImage:
        """img2img: upload `parent.image` (resized to the request's size) as PNG and run the img2img
        workflow with denoise = request.strength."""
        self.check_requests([request])
        workflow = self.workflow("img2img")
        if not workflow.takes("image"):
            raise InvalidInputError(f"ComfyUI workflow {workflow.name!r} takes no input image ({{{{image}}}} "
                                    "placeholder or comfyui_nodes image), so it cannot refine")
        image = parent.image
        if image.size != (request.width, request.height):
            image = image.resize((request.width, request.height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.convert("RGBA" if image.mode in ("RGBA", "LA") else "RGB").save(buffer, format="PNG")
        name = self.client.upload_image(buffer.getvalue(), f"echo-{parent.artifact_id}.png")
        strength = 0.5 if request.strength is None else float(request.strength)
        rendered = self._run(workflow, request, _StepMeter(progress, request.steps), denoise=strength, image=name)
        rendered.info.update(parent_artifact_id=parent.artifact_id, strength=strength, comfyui_input_image=name)
        return rendered

    @staticmethod
    def placeholder_values(request: RenderRequest, *, checkpoint: str | None = None, denoise: float = 1.0,
                           image: str | None = None) -> dict[str, Any]:
        """What each `{{placeholder}}` of a workflow becomes for `request`."""
        sampler = comfy_sampler(request.sampler) or ("", "")
        return {
            "prompt": request.prompt, "negative": request.negative_prompt, "seed": int(request.seed),
            "steps": int(request.steps), "cfg": float(request.cfg_scale), "sampler": sampler[0],
            "scheduler": sampler[1], "width": int(request.width), "height": int(request.height),
            "checkpoint": checkpoint or "", "denoise": float(denoise), "image": image or "",
        }

    def _run(self, workflow: Workflow, request: RenderRequest, meter: _StepMeter, *, denoise: float,
             image: str | None) -> RenderedImage:
        sampler = comfy_sampler(request.sampler)
        assert sampler is not None  # check_requests ran
        checkpoint = self.checkpoint() if workflow.takes("checkpoint") else None
        graph = fill(workflow, self.placeholder_values(request, checkpoint=checkpoint, denoise=denoise, image=image))
        result = self.client.run(graph, on_progress=meter.for_image(request.steps))
        meter.finish_image()
        png, ref = self._fetch(result, workflow)
        text = {str(k): str(v) for k, v in (getattr(png, "text", None) or {}).items() if k not in _RESERVED_PNG_KEYS}
        has_alpha = png.mode in ("RGBA", "LA") or "transparency" in png.info
        pixels = png.convert("RGBA" if has_alpha else "RGB")
        info: dict[str, Any] = {
            "comfyui_prompt_id": result.prompt_id,
            "comfyui_url": self.client.url,
            "checkpoint": checkpoint,
            "sampler_name": sampler[0] if workflow.takes("sampler") else None,
            "scheduler": sampler[1] if workflow.takes("scheduler") else None,
            "workflow": workflow.name,
            "node_outputs": {node: [img.get("filename") for img in (out or {}).get("images") or []
                                    if isinstance(img, dict)]
                             for node, out in result.outputs.items() if isinstance(out, dict)},
            "image": ref,
        }
        if result.node_errors:
            info["comfyui_node_errors"] = sorted(result.node_errors)
        return RenderedImage(request=request, image=pixels, info=info, png_text=text)

    def _fetch(self, result: PromptResult, workflow: Workflow) -> tuple[Image.Image, dict[str, Any]]:
        refs = result.images(workflow.nodes.get("output"))
        if not refs:
            where = f"output node {workflow.nodes['output']}" if "output" in workflow.nodes else "no output node"
            raise ComfyUIExecutionError(f"ComfyUI finished prompt {result.prompt_id} but {where} produced an image "
                                        f"(workflow {workflow.name!r}; does it end in SaveImage?)")
        ref = refs[0]
        data = self.client.view(ref)
        try:
            png = Image.open(io.BytesIO(data))
            png.load()
        except (OSError, ValueError) as exc:
            raise ComfyUIExecutionError(f"ComfyUI returned an unreadable image {ref.get('filename')!r}: {exc}") from exc
        return png, {k: ref.get(k, "") for k in ("filename", "subfolder", "type")}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class _StepMeter:
    """Turns ComfyUI `progress {value, max}` events into (done, total) sampler steps over a call:
    each image owns `request.steps` units, scaled from whatever max its sampler reports; monotone."""

    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.offset = 0
        self.steps = 0
        self.done = 0

    def for_image(self, steps: int) -> ProgressEvent:
        self.steps = steps

        def on_progress(node: str, value: int, maximum: int) -> None:
            if maximum > 0:
                self._report(self.offset + min(self.steps, round(self.steps * value / maximum)))

        return on_progress

    def finish_image(self) -> None:
        self.offset += self.steps
        self._report(self.offset)

    def _report(self, done: int) -> None:
        if done > self.done:
            self.done = done
            if self.progress is not None:
                self.progress(done, self.total)
