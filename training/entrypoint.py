"""The training entry point: `train` in the container, `python -m training train` outside it.

Reads the channels and hyperparameters as SageMaker lays them out (training.container),
fits XGBoost, evaluates on later loans (or the validation channel), and writes the model
directory of training.artifact to /opt/ml/model and `evaluation.json` to
/opt/ml/output/data. On any failure it writes one human sentence to /opt/ml/output/failure
(SageMaker shows it as the job's FailureReason) and exits non-zero: 2 for a problem with
the data or the job's settings, 1 for a bug (with the traceback on stderr for the log).

The image starts as root, as SageMaker and the SDK's local mode (which mounts
/opt/ml/model and /opt/ml/output as root-owned 0755 folders) run it: the entry point gives
the folders it writes to the user named by SPARKMAKER_TRAINING_USER (the image's `trainer`,
uid 10001), then becomes that user before reading any data. Started as any other user
(`docker run --user ...`), or outside the image, it trains as whoever it is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from configuration.errors import UserError
from training import artifact, card, metrics
from training.container import ContainerEnv
from training.data import Frame, read_channel, read_truth
from training.hyperparameters import Hyperparameters, parse_hyperparameters
from training.model import check_classes, fit, given_split, predict, split_by_time

PROG = "train"
PACKAGE_DIR = Path(__file__).resolve().parent
CODE_VERSION_FILE = PACKAGE_DIR / "CODE_VERSION"  # written by the image build (no git inside the image)


class Stopped(UserError):
    """SageMaker (or the user) stopped the job."""


def code_version() -> str:
    if CODE_VERSION_FILE.is_file():
        return CODE_VERSION_FILE.read_text(encoding="utf-8").strip() or "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training", "features/contract.py"],
            cwd=PACKAGE_DIR.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return f"{sha}+dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _log(message: str) -> None:
    print(f"[train] {message}", flush=True)


def _ceiling(validation: Frame, truth: dict[str, np.ndarray] | None, p: np.ndarray):
    """AUC of the generator's true probabilities on the validation rows that have one."""
    if truth is None:
        return None, None, None, 0
    if validation.loan_id is None:
        raise UserError("a truth channel was given but the validation rows have no loan_id to join it on")
    order = np.argsort(truth["loan_id"])
    ids, p_true = truth["loan_id"][order], truth["p_true"][order]
    where = np.clip(np.searchsorted(ids, validation.loan_id), 0, max(len(ids) - 1, 0))
    matched = (ids[where] == validation.loan_id) if len(ids) else np.zeros(len(validation), dtype=bool)
    if not matched.any():
        raise UserError(
            "no validation row's loan_id is in the truth file: give the truth file of the CSV these features came from"
        )
    y = validation.label[matched]
    return metrics.roc_auc(y, p_true[where][matched]), y, p_true[where][matched], int(matched.sum())


def run(env: ContainerEnv) -> dict[str, Any]:
    """One training run; returns the metadata written. Raises UserError for anything the user can fix."""
    started = time.perf_counter()
    env.check_configs()
    hps: Hyperparameters = parse_hyperparameters(env.raw_hyperparameters())
    nthread = hps.nthread or env.cpu_count()

    validation_dir = env.channel_dir("validation")
    has_validation = validation_dir.exists()
    train_frame = read_channel("train", env.channel_dir("train"), need_dates=not has_validation, need_loan_id=False)
    truth_dir = env.channel_dir("truth")
    truth = read_truth(truth_dir) if truth_dir.exists() else None
    if has_validation:
        validation_frame = read_channel("validation", validation_dir, need_dates=False, need_loan_id=truth is not None)
        split = given_split(train_frame, validation_frame)
    else:
        if truth is not None and train_frame.loan_id is None:
            raise UserError("a truth channel was given but the train channel has no loan_id column to join it on")
        split = split_by_time(train_frame, hps)
    _log(f"read {len(train_frame):,} rows in {time.perf_counter() - started:.1f} s; split {split.description}")
    check_classes(split.train, "training rows")
    check_classes(split.validation, "validation rows")

    fitted = fit(split.train, hps, nthread)
    _log(
        f"fitted {fitted.rounds} rounds in {time.perf_counter() - started:.1f} s (early stopping {fitted.early_stopping})"
    )
    p = predict(fitted.booster, split.validation, nthread)
    y = split.validation.label.astype(np.int64)
    threshold = metrics.choose_threshold(y, p, hps.threshold_rule)
    evaluation = metrics.evaluate(y, p, threshold)
    ceiling, truth_y, truth_p, truth_rows = _ceiling(split.validation, truth, p)
    evaluation["ceiling_roc_auc"] = ceiling
    evaluation["ceiling_rows"] = truth_rows

    env.model_dir.mkdir(parents=True, exist_ok=True)
    artifact.write_booster(fitted.booster, env.model_dir)
    record = hps.as_record()
    record["scale_pos_weight_used"] = fitted.positive_weight
    record["rounds_trained"] = fitted.rounds
    metadata = artifact.write_metadata(
        env.model_dir,
        {
            "threshold": threshold,
            "threshold_rule": hps.threshold_rule,
            "metrics": evaluation,
            "hyperparameters": record,
            "training_data": {
                "run_id": hps.data_run_id or None,
                "uri": hps.data_uri or str(env.channel_dir("train")),
                "rows_train": len(split.train),
                "rows_validation": len(split.validation),
                "split": split.description,
                "validation_from": split.cutoff,
            },
            "code_version": code_version(),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        },
    )
    artifact.write_validation_scores(env.model_dir, p, y)
    rule = "maximises F1" if hps.threshold_rule == "f1" else "maximises TPR - FPR (Youden's J)"
    bins = card.write_card(
        env.model_dir,
        metadata,
        y,
        p,
        truth_y,
        truth_p,
        notes={
            "rounds": str(fitted.rounds),
            "threshold_rule": f"the probability that {rule} on the validation rows",
            "train_rate": f"{float(split.train.label.mean()):.2%}",
            "weight": f"{fitted.positive_weight:.4g}" + (" (auto)" if hps.scale_pos_weight == "auto" else ""),
            "early_stopping": fitted.early_stopping,
        },
    )
    env.output_data_dir.mkdir(parents=True, exist_ok=True)
    (env.output_data_dir / "evaluation.json").write_text(
        json.dumps(
            {
                "metrics": evaluation,
                "threshold": threshold,
                "calibration": bins,
                "split": split.description,
                "seconds": round(time.perf_counter() - started, 2),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    # One line per metric in a fixed shape, for SageMaker metric definitions (Regex "validation:roc_auc=(\S+)").
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "ceiling_roc_auc"):
        print(f"validation:{name}={evaluation[name]}", flush=True)
    _log(f"model written to {env.model_dir} in {time.perf_counter() - started:.1f} s; threshold {threshold:.6f}")
    return metadata


def _write_failure(env: ContainerEnv | None, message: str) -> None:
    if env is None:
        return
    try:
        env.output_dir.mkdir(parents=True, exist_ok=True)
        env.failure_path.write_text(message[:1024] + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"{PROG}: cannot write the failure file {env.failure_path}: {exc}", file=sys.stderr)


def drop_privileges(env: ContainerEnv) -> None:
    """As root with SPARKMAKER_TRAINING_USER set: hand that user the output folders, then become it."""
    name = os.environ.get("SPARKMAKER_TRAINING_USER")
    if not name or os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise UserError(f"SPARKMAKER_TRAINING_USER names {name}, who is not a user of this image") from None
    for folder in (env.model_dir, env.output_dir, env.output_data_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, user.pw_uid, user.pw_gid)
    if env.failure_path.exists():
        os.chown(env.failure_path, user.pw_uid, user.pw_gid)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = user.pw_dir


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001 (signal handler signature)
    raise Stopped("training was stopped (SIGTERM) before it finished")


def main(argv: list[str] | None = None) -> int:
    """Run the contract; never raise. Exit 0 on success, 2 on a user error, 1 on a bug."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    env = None
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        env = ContainerEnv.from_environ()
        drop_privileges(env)  # a failure here is still written to the failure file, as root
        env.failure_path.unlink(missing_ok=True)
        run(env)
        return 0
    except UserError as exc:
        message = str(exc)
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        _write_failure(env, message)
        return 2
    except MemoryError:
        message = "training ran out of memory: use an instance type with more memory"
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        _write_failure(env, message)
        return 1
    except Exception as exc:  # a bug: keep the traceback for the log, one line for the reason
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"internal error in the training code: {type(exc).__name__}: {first} (see the job's log)"
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        _write_failure(env, message)
        return 1
