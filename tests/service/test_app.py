import pytest
from fastapi.testclient import TestClient

from model.inference import DEFAULT_MODEL


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no model at model/weights (run `make model`)")
def test_health_and_info():
    from service.app import app

    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        info = client.get("/v1/info").json()
        assert info["vertices"] >= 5000
        assert "CPUExecutionProvider" in info["providers"]
