"""The whole lifecycle on generated data, with real parts: the feature job in the suite's Spark session, the
training contract, the MLflow registry, the model server and the API.

One credit file (12,000 loans, 10 % bad so that a window of recent loans holds enough positives):
  1. its loans before 2020-03 make the first snapshot: the first model is judged by the absolute
     rules alone and promoted; the same file again changes nothing;
  2. the same loans with their labels shuffled: the challenger is refused (the AUC floor), and
     production, the model server and what /predict answers stay as they were;
  3. the whole file (the first one grown by its later loans): the challenger is promoted and the
     model server swaps to it under load with zero failed requests;
  4. a file the feature job rejects, twice: the run fails at the features step both times and
     every current thing (snapshot, online store, production, served model) stays current.
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pytest

from configuration.network import free_port
from features.sample_data import generate, write
from pipeline import lifecycle
from pipeline.record import RunRecord

pytestmark = pytest.mark.slow

AS_OF = dt.date(2021, 9, 18)
API_KEY = "smk_pipeline-test-" + "k" * 20
ROW = np.array([[0, np.nan, 24, 1, 0]], dtype=np.float32)  # a first loan of a young customer, new in the job


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark, spark_settings):
    from api.auth import hash_key

    root = tmp_path_factory.mktemp("lifecycle")
    raw, truth = generate(12_000, seed=11, positive_rate=0.1)
    early = raw["loan_date"] < "2020-03-01"
    files = {
        "full": root / "full.csv",
        "base": root / "base.csv",
        "shuffled": root / "shuffled.csv",
        "broken": root / "broken.csv",
    }
    write(raw, truth, files["full"])
    write(raw[early], truth[truth["loan_id"].isin(raw.loc[early, "loan_id"].astype(int))], files["base"])
    shuffled = raw[early].copy()
    shuffled["status"] = np.random.default_rng(3).permutation(shuffled["status"].to_numpy())
    shuffled.to_csv(files["shuffled"], index=False)
    broken = raw[early].copy()
    broken.loc[broken.index[::5], "loan_date"] = "2020-02-30"  # 20 % rejects: more than features.max_reject_share
    broken.to_csv(files["broken"], index=False)

    s = spark_settings
    settings = s.model_copy(
        update={
            "paths": s.paths.model_copy(update={"lake": str(root / "lake"), "state_dir": str(root / "state")}),
            "features": s.features.model_copy(update={"database": f"p_{uuid.uuid4().hex[:10]}"}),
            "serving": s.serving.model_copy(update={"port": free_port(), "watch_interval_seconds": 0.2}),
            "api": s.api.model_copy(
                update={"api_key_hashes": [hash_key(API_KEY)], "prediction_log_sqlite": str(root / "p.sqlite")}
            ),
        }
    )
    state = {"settings": settings, "files": files, "root": root, "said": []}
    yield state
    for stop in reversed(state.get("stops", [])):
        stop()


def run(world, name: str, key: str, spark, **params):
    said = world["said"]
    said.clear()
    record = lifecycle.run(
        world["settings"],
        key,
        lifecycle.Params(input=str(world["files"][name]), as_of=AS_OF, **params),
        say=said.append,
        spark=spark,
    )
    return record, said


def production(settings) -> str | None:
    from training.registry import open_registry

    return open_registry(settings).alias()


def current_run_id(settings) -> str:
    from features import lake

    return lake.read_current(settings)["run_id"]


def test_first_model_is_judged_by_the_absolute_rules_and_promoted(world, spark):
    settings = world["settings"]
    record, said = run(world, "base", "base", spark)
    trained, evaluation = record.output("train"), record.output("evaluate")
    assert trained["version"] == "1" and trained["reason"] == "no model in production"
    assert evaluation["promote"] and "no champion: absolute rules only" in evaluation["reason"]
    decision = evaluation["decision"]
    assert (
        decision["rows"] >= settings.pipeline.gate.min_rows
        and decision["positives"] >= settings.pipeline.gate.min_positives
    )
    assert production(settings) == "1"
    # each step printed with its time and outcome, then the summary naming snapshot, challenger and decision
    assert [line.split()[1] for line in said[1:-1]] == list(lifecycle.STEPS[:-1])
    assert said[-1] == record.summary and current_run_id(settings) in said[-1] and "challenger v1, promoted" in said[-1]
    assert f"{decision['rows']:,} rows, {decision['positives']:,} positives" in said[-1]

    # the decision is with the model version in MLflow too
    import mlflow

    from training.mlflow_store import tracking_uri
    from training.registry import open_registry

    run_id = open_registry(settings).run_of("1")
    logged = mlflow.MlflowClient(tracking_uri(settings)).get_run(run_id).data
    assert (
        logged.tags["gate.decision"] == "promote" and logged.tags["pipeline.retrain_reason"] == "no model in production"
    )
    assert logged.metrics["gate.challenger.roc_auc"] == pytest.approx(decision["challenger"]["roc_auc"])


def test_the_same_file_again_changes_nothing(world, spark):
    settings = world["settings"]
    snapshot = current_run_id(settings)
    record, _ = run(world, "base", "base-again", spark)
    assert record.output("features")["computed"] is False and "skipped" in record.output("features")["outcome"]
    assert record.output("train")["reason"] == "skipped: production v1 was trained on this snapshot"
    assert record.output("evaluate")["skipped"] and not record.output("promote")["promoted"]
    assert current_run_id(settings) == snapshot and production(settings) == "1"
    from training.registry import open_registry

    assert [v.version for v in open_registry(settings).versions()] == ["1"]


def start_services(world):
    """The model server (following the production alias) and the API in front of it."""
    from api.main import create_app
    from pipeline.child import environ_for, write_settings
    from tests.api.conftest import serve_app
    from tests.serving.conftest import start_server

    settings = world["settings"]
    env = environ_for(write_settings(settings, world["root"] / "server-settings.toml"))  # exactly the test's settings
    server = start_server(world["root"], [], env, port=settings.serving.port)
    world.setdefault("stops", []).append(server.stop)
    api_settings = settings.model_copy(update={"api": settings.api.model_copy(update={"model_url": server.url})})
    api = serve_app(create_app(api_settings))
    world["stops"].append(api.stop)
    world["server"], world["api"] = server, api


def predict(world, customer: int) -> dict:
    answer = world["api"].client.get(f"/predict/{customer}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # what the customer is told; the request id and the snapshot id change with every request and run
    return {k: v for k, v in body.items() if k not in ("request_id", "feature_snapshot")}


def test_a_challenger_trained_on_shuffled_labels_is_refused_and_production_stays(world, spark):
    import pyarrow.parquet as pq

    from features import lake

    settings = world["settings"]
    start_services(world)
    customer = (
        pq.read_table(lake.read_manifest(settings)["outputs"]["latest"]["uri"], columns=["id"]).column("id")[0].as_py()
    )
    before = predict(world, customer)
    world["customer"] = customer

    record, said = run(world, "shuffled", "shuffled", spark)
    evaluation = record.output("evaluate")
    assert record.output("train")["version"] == "2" and record.output("train")["reason"].startswith("new snapshot")
    assert not evaluation["promote"] and "< floor 0.55" in evaluation["reason"]
    assert evaluation["decision"]["champion"]["version"] == "1"  # both scored on the same rows
    assert "challenger v2, not promoted; production v1" in said[-1]
    assert production(settings) == "1"
    assert predict(world, customer) == before  # the same model on the same customer's same features


def test_a_challenger_on_the_grown_file_is_promoted_and_the_server_swaps_under_load(world, spark):
    from tests.serving.conftest import reference_predict
    from tests.serving.test_swap import Load, _check, _row_body
    from training.registry import open_registry

    settings = world["settings"]
    registry = open_registry(settings)
    with Load(world["server"].url, _row_body(ROW[0])) as load:
        load.wait_for("1")
        record, said = run(world, "full", "grown", spark)
        assert record.output("promote")["promoted"], said
        load.wait_for("3")
    evaluation = record.output("evaluate")
    assert evaluation["promote"] and evaluation["reason"].startswith("passes the gate")
    window = evaluation["decision"]["window"]
    v1_end = registry.metadata("1")["training_data"]["validation_from"]
    assert window["start"] >= v1_end  # rows the champion was not fitted on
    assert registry.metadata("3")["training_data"]["validation_from"] == window["start"]  # nor the challenger
    assert record.output("deploy")["serving"] == "3" and production(settings) == "3"
    expected = {v: float(reference_predict(registry.model_dir(v), ROW)[0]) for v in ("1", "3")}
    assert _check(load, expected, ["1", "3"]) > 20  # every answer a 200 from the model its header names
    assert predict(world, world["customer"])["model_version"] == "3"


def test_a_step_that_keeps_failing_leaves_everything_current(world, spark):
    from features.online import open_store

    settings = world["settings"]
    snapshot, served = current_run_id(settings), predict(world, world["customer"])
    for _attempt in range(2):
        with pytest.raises(lifecycle.StepFailed, match="step features failed: .*reject"):
            run(world, "broken", "broken", spark)
        entry = RunRecord.open(settings, "broken").steps["features"]
        assert entry["status"] == "failed" and "train" not in RunRecord.open(settings, "broken").steps
        assert current_run_id(settings) == snapshot and production(settings) == "3"
        store = open_store(settings)
        try:
            assert store.current_snapshot().run_id == snapshot
        finally:
            store.close()
        assert predict(world, world["customer"]) == served
