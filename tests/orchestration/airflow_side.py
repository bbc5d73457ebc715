"""The Airflow half of the orchestration tests: runs in .venv-airflow, started by the project's pytest.

    python airflow_side.py inspect            the DAG as Airflow parsed it, as JSON
    python airflow_side.py test DATE [CONF]   dag.test() for logical date DATE (YYYY-MM-DD), then
                                              each task instance's state and tries, as JSON

The environment (AIRFLOW_HOME with a migrated database, AIRFLOW__*, SPARKMAKER_AIRFLOW__*)
comes from the caller (orchestration.runtime.airflow_environment). The JSON is the last line
of standard output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

DAG_FILE = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "credit_risk_lifecycle.py"


def inspect() -> dict:
    from airflow.dag_processing.dagbag import DagBag

    # What the file imports beyond Airflow's own modules (which Airflow has loaded anyway).
    import airflow.providers.standard.operators.python
    import airflow.sdk  # noqa: F401

    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location("lifecycle_probe", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    imported = sorted(name for name in set(sys.modules) - before if name.partition(".")[0] != "airflow")

    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    dag = bag.dags.get("credit_risk_lifecycle")
    if dag is None:
        return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dag_ids": list(bag.dags)}
    dag.validate()  # raises on a cycle, among others
    tasks = {
        t.task_id: {
            "upstream": sorted(t.upstream_task_ids),
            "downstream": sorted(t.downstream_task_ids),
            "retries": t.retries,
            "retry_delay": t.retry_delay.total_seconds(),
            "retry_exponential_backoff": float(t.retry_exponential_backoff),
            "max_retry_delay": t.max_retry_delay.total_seconds() if t.max_retry_delay else None,
        }
        for t in dag.tasks
    }
    date = datetime(2026, 11, 20, tzinfo=timezone.utc)
    return {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dag_ids": sorted(bag.dags),
        "order": [t.task_id for t in dag.topological_sort()],
        "tasks": tasks,
        "schedule": str(dag.schedule),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "params": sorted(dag.params.keys()),
        "imported_by_dag_file": imported,
        "commands": {
            "ingest": module.step_command("ingest", module.as_of_date({"logical_date": date}), {}),
            "train_forced": module.step_command("train", "2026-11-20", {"force": True}),
            "ingest_other_input": module.step_command("ingest", "2026-11-20", {"input": "/data/other.csv"}),
        },
    }


def test(date: str, conf: dict) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAG_FILE.parent)).dags["credit_risk_lifecycle"]
    logical = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    run = dag.test(logical_date=logical, run_conf=conf or None)
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id)
            .all()
        )
        instances = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in rows}
    return {"run_id": run.run_id, "state": str(run.state), "tasks": instances}


if __name__ == "__main__":
    if sys.argv[1] == "inspect":
        result = inspect()
    else:
        result = test(sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
    print(json.dumps(result, default=str))
