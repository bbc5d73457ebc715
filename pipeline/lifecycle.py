"""The order of the steps, what each reads from the run record, and the whole run.

`run_step` is the only way a step runs, for `python -m pipeline step` (one Airflow task
each) and for `python -m pipeline run` (every step in one process) alike: it takes the
step's inputs from its predecessors' outputs in the record, reuses its own recorded output
when those inputs have not changed (so a rerun of the same key is idempotent), and records
the new output or the error.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from configuration.errors import UserError
from configuration.settings import Settings
from pipeline import steps
from pipeline.record import RunRecord, now

STEPS = ("ingest", "features", "materialize", "drift", "train", "evaluate", "promote", "deploy", "batch-score")

# step -> the steps whose outputs it reads (in the order its function takes them)
NEEDS: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "features": ("ingest",),
    "materialize": ("features",),
    "drift": ("features",),
    "train": ("ingest", "features", "drift"),
    "evaluate": ("features", "train"),
    "promote": ("train", "evaluate"),
    "deploy": ("promote",),
    "batch-score": ("features", "promote"),
}

OUTPUT_TYPES = {
    "ingest": steps.Ingested,
    "features": steps.Snapshot,
    "materialize": steps.Materialized,
    "drift": steps.Drift,
    "train": steps.Trained,
    "evaluate": steps.Evaluation,
    "promote": steps.Promotion,
    "deploy": steps.Deployment,
    "batch-score": steps.BatchScores,
}


class MissingStep(UserError):
    """A step ran before the step whose output it needs."""

    exit_code = 2


class StepFailed(UserError):
    exit_code = 1


@dataclass(frozen=True)
class Params:
    input: str | None = None
    as_of: dt.date | None = None
    force: bool = False  # features recomputed, a challenger trained, and promoted whatever the gate says
    force_features: bool = False  # only the features recomputed

    def day(self) -> dt.date:
        return self.as_of or dt.datetime.now(dt.timezone.utc).date()


def _call(settings: Settings, name: str, inputs: list[Any], params: Params, key: str, spark=None):
    if name == "ingest":
        if not params.input:
            raise UserError("the ingest step needs --input URI (a local CSV path or s3://bucket/key)")
        return steps.ingest(settings, params.input)
    if name == "features":
        (ingested,) = inputs
        return steps.features(
            settings, ingested, as_of=params.day(), force=params.force or params.force_features, spark=spark
        )
    if name == "train":
        ingested, snapshot, drift_outcome = inputs
        return steps.train(settings, ingested, snapshot, drift_outcome, force=params.force, run_key=key)
    if name == "evaluate":
        snapshot, trained = inputs
        return steps.evaluate(settings, snapshot, trained, force=params.force)
    others: dict[str, Callable[..., Any]] = {
        "materialize": steps.materialize,
        "drift": steps.drift,
        "promote": steps.promote,
        "deploy": steps.deploy,
        "batch-score": steps.batch_score,
    }
    return others[name](settings, *inputs)


def _params_used(name: str, params: Params) -> dict[str, Any]:
    """The command-line values a step depends on (its recorded output is reused only while they are the same)."""
    if name == "ingest":
        return {"input": params.input}
    if name == "features":
        return {"as_of": params.day().isoformat(), "force": params.force or params.force_features}
    if name in ("train", "evaluate"):
        return {"force": params.force}
    return {}


def _recorded_defaults(record: RunRecord, name: str, params: Params) -> Params:
    """A step rerun without --input / --as-of takes the values its run already used."""
    used = (record.steps.get(name) or {}).get("inputs", {}).get("params", {})
    if params.input is None and used.get("input"):
        params = replace(params, input=used["input"])
    if params.as_of is None and used.get("as_of"):
        params = replace(params, as_of=dt.date.fromisoformat(used["as_of"]))
    return params


def run_step(
    settings: Settings, record: RunRecord, name: str, params: Params, say: Callable[[str], None] = print, spark=None
) -> dict[str, Any]:
    """Run one step of `record`'s run (or reuse its recorded output); return its output as recorded.

    `spark`: a session the feature job may run in (else it runs in a process of its own).
    """
    if name not in STEPS:
        raise UserError(f"unknown step {name!r}: one of {', '.join(STEPS)}")
    upstream = {}
    for need in NEEDS[name]:
        output = record.output(need)
        if output is None:
            raise MissingStep(
                f"step {name} needs the output of step {need}, which run {record.key} does not have: "
                f"run `python -m pipeline step {need} --run-key {record.key}` first"
            )
        upstream[need] = output
    params = _recorded_defaults(record, name, params)
    inputs = {"params": _params_used(name, params), "upstream": upstream}
    entry = record.steps.get(name)
    # ingest always runs: the file behind a URI may have changed, and its sha256 is what the later steps key on.
    if name != "ingest" and entry and entry.get("status") == "ok" and entry.get("inputs") == inputs:
        say(f"[pipeline] {name:<11} recorded  {entry['output']['outcome']}")
        return entry["output"]

    started, clock = now(), time.perf_counter()
    typed = [OUTPUT_TYPES[need](**upstream[need]) for need in NEEDS[name]]
    try:
        output = asdict(_call(settings, name, typed, params, record.key, spark))
    except UserError as exc:
        record.set(
            name,
            {
                "status": "failed",
                "error": str(exc),
                "inputs": inputs,
                "started_at": started,
                "seconds": round(time.perf_counter() - clock, 2),
            },
        )
        say(f"[pipeline] {name:<11} failed in {time.perf_counter() - clock:.1f} s: {exc}")
        raise StepFailed(f"step {name} failed: {exc}") from None
    seconds = time.perf_counter() - clock
    previous = record.output(name)
    record.set(
        name,
        {
            "status": "ok",
            "output": output,
            "inputs": inputs,
            "started_at": started,
            "finished_at": now(),
            "seconds": round(seconds, 2),
        },
    )
    if previous is not None and previous != output:
        record.drop(list(STEPS[STEPS.index(name) + 1 :]))
    if record.output("features"):
        record.summary = summary(record)
        record.save()
    say(f"[pipeline] {name:<11} {seconds:6.1f} s  {output['outcome']}")
    return output


def summary(record: RunRecord) -> str:
    """One line: the snapshot, the challenger, the gate's decision and why."""
    snapshot = record.output("features") or {}
    trained = record.output("train") or {}
    evaluation = record.output("evaluate") or {}
    promotion = record.output("promote") or {}
    challenger = f"v{trained['version']}" if trained.get("version") else "none"
    decision = evaluation.get("reason") or trained.get("reason") or "not judged"
    verdict = "promoted" if promotion.get("promoted") else "not promoted"
    return (
        f"pipeline {record.key}: snapshot {snapshot.get('run_id', '?')}, challenger {challenger}, {verdict}; "
        f"production v{promotion.get('production') or '-'}; gate: {decision}"
    )


def run(
    settings: Settings, key: str, params: Params, batch: bool = False, say: Callable[[str], None] = print, spark=None
) -> RunRecord:
    """The whole lifecycle for one run key, in order; a failed step raises StepFailed (and later steps do not run)."""
    record = RunRecord.open(settings, key)
    say(
        f"[pipeline] run {key}: input {params.input or '(recorded)'}, as of {params.day()}"
        + (", --force" if params.force else "")
    )
    for name in STEPS:
        if name == "batch-score" and not batch:
            continue
        run_step(settings, record, name, params, say, spark)
    record.summary = summary(record)
    record.save()
    say(record.summary)
    return record
