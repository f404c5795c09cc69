"""Schemathesis against the API's own OpenAPI schema: no generated request, valid or not, gets a 5xx.

The app runs in process (ASGI) with the token, on an empty store. Requests that pass validation
queue real work, so this app takes one image of at most 64x64 per request and one run at a time
(its own limits, `ApiLimits` and the queue bound: the rest get 422 or 429), and its queue is closed
at the end, waiting for the run in flight.
"""

from __future__ import annotations

import pytest

TOKEN = "fuzz-token-0123456789"
EXAMPLES = 12  # per operation; derandomized, so every run sends the same requests


@pytest.mark.slow(seconds=5)
def test_fuzzing_the_openapi_schema_finds_no_server_error(settings):
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from schemathesis.checks import not_a_server_error

    from echo_pipeline.api.app import ApiLimits, create_app

    app = create_app(settings, token=TOKEN, limits=ApiLimits(max_images=1, max_side=64), workers=1, queue_limit=1)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/render", "/api/batch", "/api/refine", "/api/style",
                                              "/api/artifacts", "/api/artifacts/{artifact_id}",
                                              "/api/artifacts/{artifact_id}/image", "/api/runs/{run_id}",
                                              "/api/gallery", "/api/health"}
    try:
        for operation in operations:
            @given(case=operation.as_strategy())
            @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                 suppress_health_check=list(HealthCheck))
            def no_server_error(case) -> None:
                case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])

            no_server_error()
    finally:
        app.state.api.queue.close()
