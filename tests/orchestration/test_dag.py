"""The DAG credit_risk_lifecycle as Airflow itself parses and runs it (Airflow 3 in .venv-airflow).

The structure is read back from Airflow's DagBag; the runs are Airflow's own dag.test(), with
the project's python replaced by a logging wrapper (tests/orchestration/conftest.py) so that
the wiring, the retry and the refusal to retry are checked without the lifecycle's cost. The
lifecycle itself runs under the DAG in test_dag_end_to_end.py.
"""

from __future__ import annotations

import itertools

from configuration.settings import Settings, load_settings
from orchestration import runtime

STEPS = ["ingest", "features", "materialize", "drift", "train", "evaluate", "promote", "deploy"]


def wiring_settings(side, **airflow) -> Settings:
    return load_settings(
        paths={"state_dir": str(side.home.parent / "state")},
        airflow={
            "project_python": str(side.wrapper),
            "retries": 2,
            "retry_delay_seconds": 1,
            "input_uri": "/data/loans.csv",
            **airflow,
        },
    )


def test_dag_parses_with_the_steps_in_order_and_retries_with_backoff(airflow_side):
    settings = wiring_settings(
        airflow_side, retries=3, retry_delay_seconds=20, max_retry_delay_seconds=300, schedule="0 3 * * *"
    )
    dag = airflow_side.run(settings, "inspect")

    assert dag["import_errors"] == {}
    assert dag["dag_ids"] == ["credit_risk_lifecycle"]
    assert dag["order"] == STEPS
    tasks = dag["tasks"]
    assert set(tasks) == set(STEPS)
    for before, after in itertools.pairwise(STEPS):
        assert tasks[after]["upstream"] == [before]
        assert tasks[before]["downstream"] == [after]
    assert tasks["ingest"]["upstream"] == [] and tasks["deploy"]["downstream"] == []
    for task in tasks.values():
        assert task["retries"] == 3
        assert task["retry_delay"] == 20.0
        assert task["retry_exponential_backoff"] > 1  # the wait grows at each retry
        assert task["max_retry_delay"] == 300.0
    assert dag["schedule"] == "0 3 * * *"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    assert dag["params"] == ["force", "input"]


def test_dag_file_imports_nothing_but_itself_at_parse_time(airflow_side):
    """The scheduler parses the file every few seconds: nothing beyond Airflow (no project code, Spark, pandas)."""
    dag = airflow_side.run(wiring_settings(airflow_side), "inspect")
    assert dag["imported_by_dag_file"] == []


def test_default_schedule_is_daily_and_batch_score_is_optional(airflow_side):
    default = airflow_side.run(wiring_settings(airflow_side), "inspect")
    assert default["schedule"] == "@daily"
    with_batch = airflow_side.run(wiring_settings(airflow_side, batch_score=True), "inspect")
    assert with_batch["order"] == STEPS + ["batch_score"]


def test_each_step_is_the_projects_cli_keyed_on_the_logical_date(airflow_side):
    commands = airflow_side.run(wiring_settings(airflow_side), "inspect")["commands"]
    wrapper = str(airflow_side.wrapper)
    assert commands["ingest"] == [
        wrapper,
        "-m",
        "pipeline",
        "step",
        "ingest",
        "--run-key",
        "airflow-2026-11-20",
        "--as-of",
        "2026-11-20",
        "--input",
        "/data/loans.csv",
    ]
    assert commands["train_forced"] == [
        wrapper,
        "-m",
        "pipeline",
        "step",
        "train",
        "--run-key",
        "airflow-2026-11-20",
        "--as-of",
        "2026-11-20",
        "--force",
    ]
    assert commands["ingest_other_input"][-2:] == ["--input", "/data/other.csv"]


def test_default_input_is_the_stacks_own_csv(tmp_path):
    settings = load_settings(paths={"state_dir": str(tmp_path / "state")})
    env = runtime.dag_environment(settings)
    assert env["SPARKMAKER_AIRFLOW__INPUT_URI"] == str(tmp_path / "state" / "data" / "dataset_credit_risk.csv")
    assert env["SPARKMAKER_AIRFLOW__PROJECT_PYTHON"] == str(runtime.REPO_ROOT / ".venv" / "bin" / "python")


def test_a_run_calls_every_step_once_in_order_with_one_run_key(airflow_side):
    run = airflow_side.run(wiring_settings(airflow_side), "test", "2026-11-02")

    assert run["state"] == "success", airflow_side.output[-3000:]
    assert {t: i["state"] for t, i in run["tasks"].items()} == dict.fromkeys(STEPS, "success")
    calls = airflow_side.calls()
    assert [c["argv"][3] for c in calls] == STEPS
    for call in calls:
        assert call["argv"][:3] == ["-m", "pipeline", "step"]
        assert call["argv"][4:8] == ["--run-key", "airflow-2026-11-02", "--as-of", "2026-11-02"]
        assert call["cwd"] == str(runtime.REPO_ROOT)
    assert calls[0]["argv"][8:] == ["--input", "/data/loans.csv"]
    assert all(len(c["argv"]) == 8 for c in calls[1:])


def test_a_step_that_fails_once_succeeds_on_airflows_retry(airflow_side):
    run = airflow_side.run(wiring_settings(airflow_side), "test", "2026-11-03", FAIL_ONCE_STEP="train")

    assert run["state"] == "success", airflow_side.output[-3000:]
    assert run["tasks"]["train"] == {"state": "success", "try_number": 2}
    assert all(run["tasks"][s]["try_number"] == 1 for s in STEPS if s != "train")
    steps = [c["argv"][3] for c in airflow_side.calls()]
    assert steps == STEPS[:5] + ["train"] + STEPS[5:]  # train twice, the rest once
    assert "injected transient failure of train" in airflow_side.output


def test_a_missing_predecessor_fails_at_once_and_stops_the_run(airflow_side):
    """Exit 2 (a predecessor has no output) cannot get better by retrying: no retry, nothing after it runs."""
    run = airflow_side.run(wiring_settings(airflow_side, retries=3), "test", "2026-11-04", EXIT2_STEP="evaluate")

    assert run["state"] == "failed"
    assert run["tasks"]["evaluate"] == {"state": "failed", "try_number": 1}
    assert {run["tasks"][s]["state"] for s in ("promote", "deploy")} == {"upstream_failed"}
    assert [c["argv"][3] for c in airflow_side.calls()] == STEPS[:6]
    assert "a predecessor has no output" in airflow_side.output


def test_a_forced_run_passes_force_to_every_step(airflow_side):
    run = airflow_side.run(wiring_settings(airflow_side), "test", "2026-11-05", '{"force": true}')
    assert run["state"] == "success", airflow_side.output[-3000:]
    assert all(c["argv"][-1] == "--force" for c in airflow_side.calls())
    assert len(airflow_side.calls()) == len(STEPS)
