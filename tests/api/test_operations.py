"""/health, /ready, /metrics and /docs."""

from __future__ import annotations

from tests.api.conftest import CUSTOMERS, MODEL_VERSION, RUN_ID, read_metric


def test_health_and_ready(deployment):
    assert deployment.client.get("/health").json() == {"status": "ok"}
    ready = deployment.client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["checks"]["feature_store"]["ok"] and RUN_ID in body["checks"]["feature_store"]["detail"]
    assert body["checks"]["model_endpoint"]["ok"]


def test_metrics_count_requests_by_route_and_status_with_latency_and_model_version(deployment):
    for customer in CUSTOMERS[:3]:
        deployment.get(f"/predict/{customer}")
    deployment.get("/predict/1")
    deployment.get("/predict/abc")
    deployment.get(f"/predict/{CUSTOMERS[0]}", key="wrong")
    deployment.get("/no/such/route")
    text = deployment.client.get("/metrics").text
    route = "/predict/{id}"
    assert read_metric(text, "api_requests_total", route=route, method="GET", status="200") == 3
    assert read_metric(text, "api_requests_total", route=route, method="GET", status="404") == 1
    assert read_metric(text, "api_requests_total", route=route, method="GET", status="422") == 1
    assert read_metric(text, "api_requests_total", route=route, method="GET", status="401") == 1
    assert (
        read_metric(text, "api_requests_total", route="unmatched", status="404") == 1
    )  # raw paths never become labels
    assert read_metric(text, "api_request_duration_seconds_count", route=route) == 6
    assert read_metric(text, "api_request_duration_seconds_bucket", route=route, le="+Inf") == 6
    assert read_metric(text, "api_model_info", version=MODEL_VERSION) == 1
    assert read_metric(text, "api_feature_snapshot_info", run_id=RUN_ID) == 1
    assert read_metric(text, "api_predictions_total") == 3
    assert deployment.client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_docs_and_openapi(deployment):
    docs = deployment.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = deployment.client.get("/openapi.json").json()
    assert {"/predict/{id}", "/predict", "/health", "/ready", "/metrics"} <= set(schema["paths"])
    batch = schema["components"]["schemas"]["BatchRequest"]["properties"]["ids"]
    assert batch["maxItems"] == deployment.settings.api.max_batch
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
