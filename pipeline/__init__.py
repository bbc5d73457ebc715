"""The model lifecycle, each step once: ingest, features, materialize, drift, train, evaluate, promote, deploy, batch-score.

`pipeline.steps` holds the step functions (typed inputs and outputs, no knowledge of who
calls them), `pipeline.gate` the evaluation gate, `pipeline.record` the run record a step
reads its inputs from, `pipeline.lifecycle` the order and the decisions between steps, and
`python -m pipeline` (pipeline/cli.py) the command line the Airflow DAG, start.sh, the
compose roles and the notebooks' helper call.
"""
