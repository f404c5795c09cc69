"""`OpenAIImagesBackend`: images from the OpenAI Images API through the official `openai` client.

Setup: `OPENAI_API_KEY` in the environment; the base URL is `BackendConfig.openai_base_url`, else
`OPENAI_BASE_URL`, else the client's default (https://api.openai.com/v1). Spec: `openai` (dall-e-3)
or `openai:<model>` with model one of dall-e-3, gpt-image-1, dall-e-2.

How a request maps onto the API (`POST /v1/images/generations`, one call per request, `n=1`):

- size: `<width>x<height>` must be one the model offers (dall-e-3: 1024x1024, 1792x1024, 1024x1792;
  gpt-image-1: 1024x1024, 1536x1024, 1024x1536; dall-e-2: 256x256, 512x512, 1024x1024), checked in
  `check_requests` before any call.
- negative prompt: the API has none, so it is folded into the text as " Avoid: <negative>.";
  `info["prompt_sent"]` is exactly what the API received.
- seed, steps, CFG, sampler: the API has none. Every image records `info["seed_honoured"] = False`
  (re-rendering the same request gives a different image) and `capabilities.sampler` is False so the
  A1111 metadata claims no steps or CFG.
- quality: a fixed default per model ("standard" for the dall-e models, "auto" for gpt-image-1),
  recorded in `info["quality"]`.
- `response_format="b64_json"` for the dall-e models; gpt-image-1 always answers in base64 and
  rejects the parameter, so it is not sent. An answer with a `url` instead is fetched with httpx.
- dall-e-3 rewrites prompts: `info["revised_prompt"]` keeps what it actually drew.

img2img (`refine`): gpt-image-1 only, through `POST /v1/images/edits` with the parent as the input
image; strength has no API equivalent and maps to `input_fidelity` ("high" below 0.5, else "low").
dall-e-3 has no edit endpoint and dall-e-2 edits only repaint a mask's transparent areas
(inpainting), so a refine request for either is refused up front with `InvalidInputError`.

Errors, each one line: no key -> `BackendUnavailableError` before any request; 401 ->
`BackendUnavailableError` ("OpenAI rejected the API key"); 400 (content policy, invalid request) ->
`InvalidInputError` with the server's message; 429, 5xx and connection errors are retried by the
client with exponential backoff (`max_retries`, honouring `Retry-After`), then
`BackendUnavailableError`.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image

from echo_pipeline.errors import BackendUnavailableError, InvalidInputError
from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendConfig,
    BackendDescription,
    ImageBackend,
    ParentImage,
    ProgressCallback,
    RenderedImage,
)
from echo_pipeline.render.requests import RenderRequest

if TYPE_CHECKING:
    from openai import OpenAI

OPENAI_IMAGES_VERSION = "openai-images-v1"
DEFAULT_MODEL = "dall-e-3"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_HINT = "set OPENAI_API_KEY to use the OpenAI Images API (https://platform.openai.com/api-keys)"

T = TypeVar("T")


@dataclass(frozen=True)
class ModelSpec:
    sizes: tuple[str, ...]
    quality: str  # the fixed quality every image of this model is made with
    send_quality: bool  # dall-e-2 has one quality: nothing to send
    send_response_format: bool  # gpt-image-1 rejects response_format (it always returns base64)
    max_prompt_chars: int
    edit_refusal: str | None  # why refine is impossible with this model; None = images.edit works


MODELS: dict[str, ModelSpec] = {
    "dall-e-3": ModelSpec(
        sizes=("1024x1024", "1792x1024", "1024x1792"), quality="standard", send_quality=True,
        send_response_format=True, max_prompt_chars=4000,
        edit_refusal="dall-e-3 has no edit endpoint; refine with openai:gpt-image-1"),
    "gpt-image-1": ModelSpec(
        sizes=("1024x1024", "1536x1024", "1024x1536"), quality="auto", send_quality=True,
        send_response_format=False, max_prompt_chars=32000, edit_refusal=None),
    "dall-e-2": ModelSpec(
        sizes=("256x256", "512x512", "1024x1024"), quality="standard", send_quality=False,
        send_response_format=True, max_prompt_chars=1000,
        edit_refusal="dall-e-2 edits only repaint the transparent areas of a mask (inpainting), not a "
                     "whole-image variation; refine with openai:gpt-image-1"),
}
ALL_SIZES = tuple(dict.fromkeys(size for spec in MODELS.values() for size in spec.sizes))


def _unknown_model(model: str) -> InvalidInputError:
    return InvalidInputError(f"unknown OpenAI image model {model!r}; available: {', '.join(MODELS)}")


def prompt_sent(request: RenderRequest) -> str:
    """The text the API receives: the prompt with the negative prompt folded in (the API has no
    negative prompt)."""
    negative = " ".join(request.negative_prompt.split()).rstrip(".")
    return f"{request.prompt} Avoid: {negative}." if negative else request.prompt


def _check_for_model(request: RenderRequest, model: str) -> None:
    spec = MODELS.get(model)
    if spec is None:
        raise _unknown_model(model)
    size = f"{request.width}x{request.height}"
    if size not in spec.sizes:
        raise InvalidInputError(f"size {size} is not offered by OpenAI's {model}; allowed: {', '.join(spec.sizes)}")
    chars = len(prompt_sent(request))
    if chars > spec.max_prompt_chars:
        raise InvalidInputError(f"the prompt sent to {model} (negative prompt included) is {chars} characters; "
                                f"its limit is {spec.max_prompt_chars}")
    if request.parent_id is not None and spec.edit_refusal:
        raise InvalidInputError(f"cannot refine with OpenAI's {model}: {spec.edit_refusal}")


class OpenAIImagesBackend(ImageBackend):
    """Text to image (and gpt-image-1 edits) through the OpenAI Images API."""

    name = "openai"
    capabilities = BackendCapabilities(
        txt2img=True,
        img2img=True,  # gpt-image-1 only; check_requests refuses refine for the dall-e models
        tiling=False,
        negative_prompt=True,  # folded into the prompt text as "Avoid: ..."
        sampler=False,  # no steps, sampler or CFG: the A1111 metadata must not claim them
        min_side=256, max_side=1792, size_multiple=1,
    )

    def __init__(self, config: BackendConfig | None = None, *, max_retries: int = 3,
                 timeout_s: float = 180.0) -> None:
        """`max_retries`: retries of a 429, 5xx or connection error (exponential backoff from 0.5 s,
        or the server's Retry-After); `timeout_s`: longest wait for one API call (gpt-image-1 at
        high quality can take a minute). Nothing is imported or contacted here."""
        super().__init__(config)
        model = (self.config.model or DEFAULT_MODEL).strip().lower()
        if model not in MODELS:
            raise _unknown_model(self.config.model or "")
        self.model = model
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.base_url = self.config.openai_base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self._client: OpenAI | None = None

    def describe(self) -> BackendDescription:
        return BackendDescription(backend=self.name, model=self.model, model_hash="", version=OPENAI_IMAGES_VERSION)

    @classmethod
    def check_requests(cls, requests: Sequence[RenderRequest]) -> None:
        """Sizes, prompt length and refine support per model (`request.model`, filled by `prepare`).
        A request not yet prepared for this backend names no model: its size must be one some
        model offers, and the exact check happens once `prepare` has filled the model in."""
        for request in requests:
            if request.backend == cls.name and request.model:
                _check_for_model(request, request.model)
            elif f"{request.width}x{request.height}" not in ALL_SIZES:
                raise InvalidInputError(f"size {request.width}x{request.height} is not offered by any OpenAI image "
                                        f"model; allowed: " + "; ".join(
                                            f"{name} {', '.join(spec.sizes)}" for name, spec in MODELS.items()))
        super().check_requests(requests)

    def check_usable(self) -> str | None:
        """Only whether a key is set: checking it would cost a network call."""
        return None if os.environ.get("OPENAI_API_KEY", "").strip() else KEY_HINT

    def available_models(self) -> list[str]:
        """The models this backend knows how to call (not a query: listing them needs the network)."""
        return list(MODELS)

    # -- rendering ----------------------------------------------------------------------------------
    def render(
        self, requests: Sequence[RenderRequest], progress: ProgressCallback | None = None
    ) -> Iterator[RenderedImage]:
        """Validate every request and the key now (before any call), then stream one image per call."""
        requests = list(requests)
        self._validate(requests)
        client = self._get_client()
        return self._stream(client, requests, progress)

    def _stream(self, client: OpenAI, requests: list[RenderRequest],
                progress: ProgressCallback | None) -> Iterator[RenderedImage]:
        total = len(requests)
        for done, request in enumerate(requests, start=1):
            yield self._generate(client, request)
            if progress is not None:
                progress(done, total)

    def _generate(self, client: OpenAI, request: RenderRequest) -> RenderedImage:
        spec = MODELS[self.model]
        text = prompt_sent(request)
        size = f"{request.width}x{request.height}"
        params: dict[str, Any] = {"model": self.model, "prompt": text, "size": size, "n": 1}
        if spec.send_quality:
            params["quality"] = spec.quality
        if spec.send_response_format:
            params["response_format"] = "b64_json"
        response = self._call(lambda: client.images.generate(**params))
        image, delivered = self._first_image(response)
        return RenderedImage(request=request, image=image, info=self._info(request, response, delivered, text))

    def refine(self, parent: ParentImage, request: RenderRequest,
               progress: ProgressCallback | None = None) -> RenderedImage:
        """img2img with gpt-image-1's edit endpoint: `parent.image` is the input, `request.prompt`
        (negative folded in) says what to make of it."""
        self._validate([request])
        client = self._get_client()
        strength = 0.5 if request.strength is None else float(request.strength)
        # No strength in the API: input_fidelity is the closest knob (how closely to keep the input's features).
        fidelity = "high" if strength < 0.5 else "low"
        buffer = io.BytesIO()
        parent.image.convert("RGB").save(buffer, format="PNG")
        text = prompt_sent(request)
        params: dict[str, Any] = {
            "image": ("parent.png", buffer.getvalue(), "image/png"), "prompt": text, "model": self.model,
            "size": f"{request.width}x{request.height}", "n": 1, "quality": MODELS[self.model].quality,
            "input_fidelity": fidelity,
        }
        response = self._call(lambda: client.images.edit(**params))
        image, delivered = self._first_image(response)
        info = self._info(request, response, delivered, text)
        info.update(api="images.edit", parent_artifact_id=parent.artifact_id, strength=strength,
                    strength_honoured=False, input_fidelity=fidelity)
        if progress is not None:
            progress(1, 1)
        return RenderedImage(request=request, image=image, info=info)

    def _validate(self, requests: list[RenderRequest]) -> None:
        self.check_requests(requests)
        for request in requests:
            if request.backend == self.name and request.model and request.model != self.model:
                raise InvalidInputError(f"request was prepared for OpenAI's {request.model} but this backend runs "
                                        f"{self.model}; use openai:{request.model}")
            _check_for_model(request, self.model)

    def _info(self, request: RenderRequest, response: Any, delivered: str, text: str) -> dict[str, Any]:
        item = response.data[0]
        return {
            "api": "images.generate",
            "model": self.model,
            "size": f"{request.width}x{request.height}",
            "quality": MODELS[self.model].quality,
            "created": response.created,
            "prompt_sent": text,
            "negative_prompt_folded": bool(request.negative_prompt.strip()),
            "revised_prompt": getattr(item, "revised_prompt", None),
            "seed_honoured": False,  # the API takes no seed: the same request gives another image
            "delivered_as": delivered,
        }

    # -- the API --------------------------------------------------------------------------------------
    def _get_client(self) -> OpenAI:
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise BackendUnavailableError(KEY_HINT)
        if self._client is None:
            import openai  # lazy: `echo-os --help` and the other backends never pay for it

            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=self.max_retries,
                                         timeout=self.timeout_s)
        return self._client

    def _call(self, call: Callable[[], T]) -> T:
        """Run one API call (the client retries 429/5xx/connection errors) and turn its failures
        into one-line EchoErrors."""
        import openai

        try:
            return call()
        except openai.AuthenticationError as exc:
            raise BackendUnavailableError(f"OpenAI rejected the API key (401 at {self.base_url}); check "
                                          "OPENAI_API_KEY") from exc
        except openai.BadRequestError as exc:
            if _server_code(exc) == "content_policy_violation":
                raise InvalidInputError(f"OpenAI's safety system rejected the prompt: {_server_message(exc)}") from exc
            raise InvalidInputError(f"OpenAI refused the request: {_server_message(exc)}") from exc
        except openai.RateLimitError as exc:
            raise BackendUnavailableError(f"OpenAI rate limit or quota (429) after {self.max_retries} retries: "
                                          f"{_server_message(exc)}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (401, 403, 404, 408, 409):
                raise BackendUnavailableError(
                    f"OpenAI Images API at {self.base_url} answered {exc.status_code}"
                    f"{f' after {self.max_retries} retries' if exc.status_code >= 500 else ''}: "
                    f"{_server_message(exc)}") from exc
            raise InvalidInputError(f"OpenAI refused the request ({exc.status_code}): {_server_message(exc)}") from exc
        except openai.APIConnectionError as exc:
            raise BackendUnavailableError(f"cannot reach the OpenAI Images API at {self.base_url} after "
                                          f"{self.max_retries} retries: {exc}") from exc
        except openai.OpenAIError as exc:  # e.g. an answer that does not parse
            raise BackendUnavailableError(f"OpenAI Images API at {self.base_url} failed: {exc}") from exc

    def _first_image(self, response: Any) -> tuple[Image.Image, str]:
        """(RGB image, "b64_json" or "url") from the first item of an ImagesResponse."""
        data = getattr(response, "data", None) or []
        if not data:
            raise BackendUnavailableError(f"OpenAI Images API at {self.base_url} returned no image")
        item = data[0]
        if item.b64_json:
            raw, delivered = base64.b64decode(item.b64_json), "b64_json"
        elif item.url:
            raw, delivered = self._fetch(item.url), "url"
        else:
            raise BackendUnavailableError(f"OpenAI Images API at {self.base_url} returned neither b64_json nor url")
        try:
            with Image.open(io.BytesIO(raw)) as opened:
                return opened.convert("RGB"), delivered
        except (OSError, ValueError) as exc:
            raise BackendUnavailableError(f"OpenAI Images API returned an image PIL cannot read: {exc}") from exc

    def _fetch(self, url: str) -> bytes:
        import httpx

        try:
            reply = httpx.get(url, timeout=self.timeout_s, follow_redirects=True)
            reply.raise_for_status()
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"cannot download the image OpenAI returned ({url}): {exc}") from exc
        return reply.content

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _server_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(getattr(exc, "message", exc))


def _server_code(exc: Exception) -> str | None:
    body = getattr(exc, "body", None)
    code = body.get("code") if isinstance(body, dict) else None
    return str(code) if code else getattr(exc, "code", None)


__all__ = ["DEFAULT_MODEL", "MODELS", "OPENAI_IMAGES_VERSION", "OpenAIImagesBackend", "prompt_sent"]
