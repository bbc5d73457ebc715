"""Every answered prediction reaches the prediction log (SQLite or PostgreSQL), and the log never holds the answer up."""

from __future__ import annotations

import time


from api.prediction_log import open_prediction_log
from tests.api.conftest import CUSTOMERS, deploy, read_metric, teardown_deployment


def test_every_answer_is_logged_field_for_field_and_a_graceful_stop_loses_nothing(deployment):
    answers = [deployment.get(f"/predict/{c}").json() for c in CUSTOMERS[:30]]
    batch = deployment.post("/predict", {"ids": CUSTOMERS[30:40] + [1]}).json()
    deployment.get("/predict/1")  # a 404 is not a prediction: not logged
    deployment.api.stop()  # lifespan shutdown: the writer drains its queue
    log = open_prediction_log(deployment.settings)
    entries = log.recent(1000)
    assert len(entries) == 40
    for answer, logged in zip(answers, entries[:30]):
        assert logged.request_id == answer["request_id"]
        assert logged.customer_id == answer["id"]
        assert logged.features == answer["features"]
        assert logged.probability == answer["probability"]
        assert (logged.label, logged.threshold, logged.model_version) == (
            answer["label"],
            answer["threshold"],
            answer["model_version"],
        )
        assert (logged.snapshot_run_id, logged.snapshot_as_of) == (
            answer["feature_snapshot"]["run_id"],
            answer["feature_snapshot"]["as_of"],
        )
        assert 0 < logged.latency_ms < 5000
        assert logged.ts.endswith("Z")
    assert {e.request_id for e in entries[30:]} == {batch["request_id"]}
    assert [e.customer_id for e in entries[30:]] == CUSTOMERS[30:40]
    log.close()


def test_a_locked_log_table_does_not_slow_the_answers(request, tmp_path, model_server):
    """PostgreSQL holds an exclusive lock on the log table: the writer waits, the answers do not."""
    import psycopg
    from psycopg import sql

    deployed = deploy(tmp_path, request, "sqlite", "postgres", model_server.url)
    try:
        assert deployed.get(f"/predict/{CUSTOMERS[0]}").status_code == 200
        log = open_prediction_log(deployed.settings)
        deadline = time.monotonic() + 10
        while log.count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.count() == 1
        with psycopg.connect(deployed.settings.api.prediction_log_dsn) as locker:
            locker.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(deployed.settings.api.prediction_log_table)
                )
            )
            timings = []
            for customer in CUSTOMERS[1:41]:
                started = time.perf_counter()
                assert deployed.get(f"/predict/{customer}").status_code == 200
                timings.append(time.perf_counter() - started)
            time.sleep(0.3)  # the writer is now stuck on the lock with its batch
            assert max(timings) < 0.5, max(timings)
            locker.rollback()  # releases the lock
        deadline = time.monotonic() + 10
        while log.count() < 41 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.count() == 41
        log.close()
    finally:
        teardown_deployment(deployed)


def test_an_unreachable_log_database_does_not_fail_the_answers(request, tmp_path, model_server):
    from tests.online.conftest import closed_port

    request.getfixturevalue("postgres_dsn")  # the suite's PostgreSQL check: this test uses a dead one on purpose
    deployed = deploy(
        tmp_path,
        request,
        "sqlite",
        "postgres",
        model_server.url,
        prediction_log_dsn=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
        log_queue_max=5,
    )
    try:
        statuses = [deployed.get(f"/predict/{c}").status_code for c in CUSTOMERS[:30]]
        assert statuses == [200] * 30
        time.sleep(0.3)
        metrics = deployed.get("/metrics").text
        assert read_metric(metrics, "api_prediction_log_dropped_total") >= 20  # bounded memory: the excess is counted
        assert read_metric(metrics, "api_prediction_log_written_total") == 0
    finally:
        deployed.api.stop()
