"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): no input,
however odd, makes the service fail with a 5xx or answer outside its documented contract."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (hypothesis comes with schemathesis)
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402

API_KEY = "fuzz-key"
OPERATIONS = ["POST /v1/reconstruct", "POST /reconstruct", "POST /v1/reconstruct/batch", "POST /v1/transfer",
              "POST /v1/reconstruct/person", "GET /healthz", "GET /readyz", "GET /v1/info", "GET /metrics"]


@pytest.fixture(scope="module")
def api_schema():
    schema = schemathesis.openapi.from_asgi("/openapi.json",
                                            create_app(ServiceSettings(max_in_flight=64, api_keys=[API_KEY])))
    yield {f"{op.method.upper()} {op.path}": op for op in (result.ok() for result in schema.get_all_operations())}
    schemathesis.python.asgi.shutdown_lifespans()


@pytest.mark.parametrize("name", OPERATIONS)
def test_api_contract_holds_for_generated_requests(api_schema, name):
    operation = api_schema[name]

    @given(case=operation.as_strategy())
    @settings(max_examples=40 if name.startswith("POST") else 5, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        # a schema-valid upload is still not necessarily an image (415/400) or a face (422):
        # every other check applies, the 5xx one first; requests without the key must get 401
        case.call_and_validate(headers={"X-API-Key": API_KEY}, excluded_checks=[positive_data_acceptance])

    check()
