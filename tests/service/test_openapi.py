"""The app's /openapi.json is a valid OpenAPI 3.1 document: every $ref resolves, the JSON answers are described
by the real response models, every operation has examples, and the JSON examples match their schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.problems import PROBLEM_MEDIA_TYPE
from service.schemas import BatchJSON, InfoJSON, PersonJSON, ReadyJSON, ReconstructionJSON
from service.settings import ServiceSettings

openapi_spec_validator = pytest.importorskip("openapi_spec_validator")  # the `test` extra


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as served (no lifespan needed: no model is loaded to build it)."""
    response = TestClient(create_app(ServiceSettings())).get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: not a reference inside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_the_document_is_valid_openapi(document):
    assert document["openapi"].startswith("3.1")
    openapi_spec_validator.validate(document)


def test_every_ref_resolves(document):
    found = set(refs(document))
    assert "#/components/schemas/Problem" in found and "#/components/schemas/ReconstructionJSON" in found
    for ref in sorted(found):
        resolve(document, ref)


def test_json_answers_are_described_by_the_response_models(document):
    schemas = document["components"]["schemas"]
    for model in (ReconstructionJSON, BatchJSON, PersonJSON, InfoJSON, ReadyJSON):
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields), model.__name__
    expected = {"/v1/reconstruct": "ReconstructionJSON", "/reconstruct": "ReconstructionJSON",
                "/v1/reconstruct/batch": "BatchJSON", "/v1/transfer": "ReconstructionJSON",
                "/v1/reconstruct/person": "PersonJSON", "/v1/info": "InfoJSON", "/readyz": "ReadyJSON"}
    for path, name in expected.items():
        (operation,) = document["paths"][path].values()
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}, path
    assert {"model_version", "landmark_calibration"} <= set(schemas["ReconstructionJSON"]["required"])


def test_errors_share_the_problem_schema(document):
    for name, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"][PROBLEM_MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}, (
                    name, status)


def test_every_answer_documents_the_model_version_header(document):
    for name, operation in operations(document):
        for status, response in operation["responses"].items():
            assert "X-Model-Version" in response.get("headers", {}), (name, status)


def test_every_operation_has_examples(document):
    for name, operation in operations(document):
        ok = operation["responses"]["200"]["content"]
        assert any("example" in media or "examples" in media for media in ok.values()), name
        for status, response in operation["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if "json" in media_type:
                    assert "example" in media or "examples" in media, (name, status, media_type)
        if "requestBody" in operation:
            (form,) = operation["requestBody"]["content"].values()
            assert form.get("examples"), name


def test_json_examples_match_their_schemas(document):
    from jsonschema.validators import Draft202012Validator

    checked = 0
    for name, operation in operations(document):
        for status, response in operation["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if "json" not in media_type:
                    continue
                values = [media["example"]] if "example" in media else []
                values += [example["value"] for example in media.get("examples", {}).values()]
                # "#/components/..." resolves within the schema validated against: give it the components
                validator = Draft202012Validator({"components": document["components"], "allOf": [media["schema"]]})
                for value in values:
                    errors = [error.message for error in validator.iter_errors(value)]
                    assert not errors, (name, status, errors)
                    checked += 1
    assert checked >= 20
