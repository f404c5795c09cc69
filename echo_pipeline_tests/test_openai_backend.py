"""The OpenAI Images backend against a local fake of the API (echo_pipeline_tests/openai_server.py),
plus the registry's refusal of Midjourney and its entry-point extension group."""

from __future__ import annotations

import socket
from importlib.metadata import EntryPoint

import pytest
from PIL import Image

from echo_pipeline.errors import BackendUnavailableError, InvalidInputError
from echo_pipeline.render.backends import registry
from echo_pipeline.render.backends.base import (
    BackendCapabilities,
    BackendDescription,
    ImageBackend,
    ParentImage,
    RenderedImage,
)
from echo_pipeline.render.backends.registry import create_backend
from echo_pipeline.render.requests import RenderRequest
from echo_pipeline.settings import BackendConfig
from echo_pipeline_tests.openai_server import CONTENT_POLICY_MESSAGE, running_openai_server

KEY = "sk-test-fake"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def backend_for(url: str, spec: str = "openai", **options):
    # Few retries: the fake server's Retry-After of a few ms keeps any backoff short.
    options.setdefault("max_retries", 2)
    options.setdefault("timeout_s", 30.0)
    return create_backend(spec, BackendConfig(openai_base_url=url), **options)


def request_for(backend, prompt="a lighthouse at dusk", width=1024, height=1024, **fields) -> RenderRequest:
    return backend.prepare(RenderRequest(prompt=prompt, seed=7, width=width, height=height, **fields))


def test_generates_with_dall_e_3_and_records_what_was_sent():
    with running_openai_server() as (url, state):
        backend = backend_for(url)
        reqs = [request_for(backend), request_for(backend, "a harbour at night", width=1792)]
        seen = []
        images = list(backend.render(reqs, progress=lambda done, total: seen.append((done, total))))
    assert [img.request for img in images] == reqs
    assert images[0].image.mode == "RGB" and images[0].image.size == (1024, 1024)
    assert images[1].image.size == (1792, 1024)
    assert seen == [(1, 2), (2, 2)]
    body = state.bodies()[0]
    assert body == {"model": "dall-e-3", "prompt": "a lighthouse at dusk", "size": "1024x1024", "n": 1,
                    "quality": "standard", "response_format": "b64_json"}
    assert state.requests[0]["authorization"] == f"Bearer {KEY}"
    info = images[0].info
    assert info["revised_prompt"] == "A richly detailed rendering of a lighthouse at dusk"
    expected = {"api": "images.generate", "model": "dall-e-3", "size": "1024x1024", "quality": "standard",
                "created": state.created, "prompt_sent": "a lighthouse at dusk", "negative_prompt_folded": False,
                "seed_honoured": False, "delivered_as": "b64_json"}
    assert {key: info[key] for key in expected} == expected
    desc = backend.describe()
    assert desc == BackendDescription(backend="openai", model="dall-e-3", model_hash="", version="openai-images-v1")
    assert (reqs[0].backend, reqs[0].model, reqs[0].backend_version) == ("openai", "dall-e-3", "openai-images-v1")


def test_gpt_image_1_sends_no_response_format_and_has_no_revised_prompt():
    with running_openai_server() as (url, state):
        backend = backend_for(url, "openai:gpt-image-1")
        (image,) = backend.render([request_for(backend, width=1536)])
    assert state.bodies() == [{"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "size": "1536x1024", "n": 1,
                               "quality": "auto"}]
    assert image.image.size == (1536, 1024)
    assert image.info["revised_prompt"] is None and image.info["quality"] == "auto"


def test_negative_prompt_is_folded_into_the_prompt():
    with running_openai_server() as (url, state):
        backend = backend_for(url)
        (image,) = backend.render([request_for(backend, negative_prompt="text, watermarks.")])
    sent = "a lighthouse at dusk Avoid: text, watermarks."
    assert state.bodies()[0]["prompt"] == sent
    assert image.info["prompt_sent"] == sent and image.info["negative_prompt_folded"] is True


def test_wrong_size_is_refused_before_any_request():
    with running_openai_server() as (url, state):
        backend = backend_for(url)
        with pytest.raises(InvalidInputError, match="1024x1024, 1792x1024, 1024x1792") as err:
            backend.render([request_for(backend), request_for(backend, width=512, height=512)])
        assert "512x512" in str(err.value)
        # The classmethod check (run before any backend exists) knows the model from the prepared request.
        with pytest.raises(InvalidInputError, match="1024x1024, 1536x1024, 1024x1536"):
            type(backend).check_requests([RenderRequest(prompt="x", seed=1, width=1024, height=1792,
                                                        backend="openai", model="gpt-image-1")])
        # Unprepared: any model's size passes, a size no model offers does not.
        type(backend).check_requests([RenderRequest(prompt="x", seed=1, width=1536, height=1024)])
        with pytest.raises(InvalidInputError, match="not offered by any OpenAI image model"):
            type(backend).check_requests([RenderRequest(prompt="x", seed=1, width=640, height=640)])
    assert state.requests == []


def test_tiling_and_too_long_prompts_are_refused_up_front():
    backend = create_backend("openai:dall-e-2")
    with pytest.raises(InvalidInputError, match="tiling"):
        backend.render([request_for(backend, width=512, height=512, tiling=True)])
    with pytest.raises(InvalidInputError, match="limit is 1000"):
        backend.render([request_for(backend, prompt="word " * 300, width=512, height=512)])


def test_unknown_model_lists_the_models():
    with pytest.raises(InvalidInputError, match="dall-e-3, gpt-image-1, dall-e-2"):
        create_backend("openai:dall-e-4")
    assert create_backend("openai").available_models() == ["dall-e-3", "gpt-image-1", "dall-e-2"]
    with pytest.raises(InvalidInputError, match="'dall-e-4'.*dall-e-3, gpt-image-1, dall-e-2"):
        type(create_backend("openai")).check_requests([RenderRequest(prompt="x", seed=1, width=1024, height=1024,
                                                                     backend="openai", model="dall-e-4")])


def test_missing_key_is_a_clear_error_and_sends_nothing(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with running_openai_server() as (url, state):
        backend = backend_for(url)  # creating and preparing needs no key
        assert "OPENAI_API_KEY" in (backend.check_usable() or "")
        with pytest.raises(BackendUnavailableError, match="set OPENAI_API_KEY"):
            backend.render([request_for(backend)])
    assert state.requests == []
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert backend.check_usable() is None


def test_rejected_key_is_backend_unavailable():
    with running_openai_server(api_key="sk-another-key") as (url, state):
        backend = backend_for(url)
        with pytest.raises(BackendUnavailableError, match="OpenAI rejected the API key"):
            list(backend.render([request_for(backend)]))
    assert len(state.requests) == 1  # a 401 is not retried


def test_content_policy_rejection_carries_the_server_message():
    with running_openai_server(content_policy=True) as (url, state):
        backend = backend_for(url)
        with pytest.raises(InvalidInputError) as err:
            list(backend.render([request_for(backend)]))
    assert CONTENT_POLICY_MESSAGE in str(err.value) and "safety system" in str(err.value)
    assert "\n" not in str(err.value)
    assert len(state.requests) == 1


@pytest.mark.parametrize("status", [500, 429])
def test_transient_failures_are_retried(status):
    with running_openai_server(fail_first=2, fail_status=status) as (url, state):
        backend = backend_for(url, max_retries=2)
        (image,) = backend.render([request_for(backend)])
    assert image.image.size == (1024, 1024)
    assert len(state.requests) == 3


def test_persistent_failures_end_as_backend_unavailable():
    with running_openai_server(fail_first=10, fail_status=429) as (url, state):
        backend = backend_for(url, max_retries=1)
        with pytest.raises(BackendUnavailableError, match="rate limit or quota"):
            list(backend.render([request_for(backend)]))
    assert len(state.requests) == 2


def test_unreachable_server_is_backend_unavailable():
    # A port held but not listening: connections are refused at once, and nobody else can take it.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        backend = backend_for(f"http://127.0.0.1:{held.getsockname()[1]}/v1", max_retries=1)
        with pytest.raises(BackendUnavailableError, match="cannot reach the OpenAI Images API"):
            list(backend.render([request_for(backend)]))


def test_url_answers_are_downloaded():
    with running_openai_server(return_url=True) as (url, state):
        backend = backend_for(url, "openai:dall-e-2")
        (image,) = backend.render([request_for(backend, width=256, height=256)])
    assert image.info["delivered_as"] == "url" and image.image.size == (256, 256)
    assert len(state.files) == 1


def test_dall_e_3_refine_is_refused():
    backend = create_backend("openai")
    parent = _parent()
    request = request_for(backend, parent_id=parent.artifact_id, strength=0.4)
    with pytest.raises(InvalidInputError, match="dall-e-3 has no edit endpoint"):
        backend.refine(parent, request)
    with pytest.raises(InvalidInputError, match="dall-e-3 has no edit endpoint"):
        type(backend).check_requests([request])


def test_gpt_image_1_refine_edits_the_parent():
    parent = _parent()
    with running_openai_server() as (url, state):
        backend = backend_for(url, "openai:gpt-image-1")
        request = request_for(backend, "the same scene in winter", parent_id=parent.artifact_id, strength=0.3)
        seen = []
        refined = backend.refine(parent, request, progress=lambda d, t: seen.append((d, t)))
    (call,) = state.requests
    assert call["path"] == "/v1/images/edits"
    body = call["body"]
    assert body["model"] == "gpt-image-1" and body["prompt"] == "the same scene in winter"
    assert body["size"] == "1024x1024" and body["input_fidelity"] == "high" and "response_format" not in body
    assert body["image_sizes"] == [[1024, 1024]]
    # The fake answers with the inverted input: the parent really was sent.
    assert refined.image.getpixel((0, 0)) == (255 - 200, 255 - 40, 255 - 10)
    assert refined.info["parent_artifact_id"] == parent.artifact_id
    assert refined.info["api"] == "images.edit" and refined.info["strength_honoured"] is False
    assert seen == [(1, 1)]


def _parent() -> ParentImage:
    request = RenderRequest(prompt="a lighthouse", seed=1, width=1024, height=1024, backend="openai", model="dall-e-3")
    return ParentImage(artifact_id="a1b2c3", image=Image.new("RGB", (1024, 1024), (200, 40, 10)), request=request)


def test_backend_module_does_not_import_openai_eagerly():
    import subprocess
    import sys

    code = ("import sys, echo_pipeline.render.backends.openai_images as m; "
            "m.OpenAIImagesBackend().describe(); print('openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- registry ----------------------------------------------------------------------------------------
def test_midjourney_is_refused_with_the_reason():
    with pytest.raises(BackendUnavailableError, match="Midjourney has no public API") as err:
        create_backend("midjourney")
    assert "echo_os.backends" in str(err.value)


class FakeArtBackend(ImageBackend):
    """A third-party backend as a plugin package would declare it."""

    name = "fakeart"
    capabilities = BackendCapabilities(sampler=False)

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="fakeart", model=self.config.model or "fake-v1")

    def render(self, requests, progress=None):
        for request in requests:
            yield RenderedImage(request=request, image=Image.new("RGB", request.size))


def test_entry_point_plugins_are_found_by_name(monkeypatch):
    found = [
        EntryPoint(name="FakeArt", value=f"{__name__}:FakeArtBackend", group=registry.ENTRY_POINT_GROUP),
        # A plugin cannot shadow a built-in name.
        EntryPoint(name="openai", value=f"{__name__}:FakeArtBackend", group=registry.ENTRY_POINT_GROUP),
    ]
    calls = []

    def fake_entry_points(*, group):
        calls.append(group)
        return found if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    registry._plugins.cache_clear()
    try:
        backend = create_backend("fakeart:custom-model")
        assert isinstance(backend, FakeArtBackend) and backend.describe().model == "custom-model"
        assert "fakeart" in registry.available_backends()
        assert type(create_backend("openai")).__name__ == "OpenAIImagesBackend"
        assert calls == [registry.ENTRY_POINT_GROUP]
    finally:
        registry._plugins.cache_clear()
