"""The evaluation gate: the challenger and the champion scored on the same recent rows, then one decision.

The rows: loans of the new snapshot's training table in its most recent window, which
neither model trained on. By default the window is the last `window_fraction` (10 %) of the
snapshot's date range; where the champion's training data reaches further (a credit file
keeps its old loans, so snapshots overlap), the window starts where the champion's own
training rows end (its metadata's `validation_from`: the first loan date it was not fitted
on). The pipeline trains the challenger with `split_date` = the window's start, so the
challenger was not fitted on these rows either.

The rules (settings `pipeline.gate.*`):
  - refuse to judge on fewer than `min_rows` rows or `min_positives` positives;
  - always: ROC-AUC >= `min_auc` (a champion scored on garbage labels is no better, so the
    relative rule alone would wave a garbage challenger through);
  - always: Brier skill score >= `min_brier_skill`: calibration is judged by the Brier score,
    against the constant forecast of the window's positive rate;
  - with a champion: ROC-AUC >= champion's - `max_auc_drop`, and Brier <= champion's x
    (1 + `max_brier_rise`);
  - `--force` promotes regardless, and the decision says so.

Both models are scored with the code the model server answers with (serving.model.load_model
and LoadedModel.predict), the metrics are training.metrics': no third scorer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from configuration.errors import UserError
from training import metrics
from training.data import Frame, read_channel


@dataclass(frozen=True)
class Window:
    start: str  # ISO date: rows dated on or after it
    end: str  # ISO date of the snapshot's last loan
    why: str  # how the start was chosen


@dataclass(frozen=True)
class Figures:
    """One model's figures on the window's rows."""

    version: str
    roc_auc: float
    brier: float
    brier_skill: float

    def text(self) -> str:
        return f"v{self.version} AUC {self.roc_auc:.4f}, Brier {self.brier:.5f} (skill {self.brier_skill:+.3f})"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    rows: int
    positives: int
    window: dict[str, str] | None
    challenger: dict[str, Any] | None
    champion: dict[str, Any] | None
    forced: bool = False


def _iso(day: np.datetime64) -> str:
    return str(np.datetime_as_string(day, unit="D"))


def champion_data_end(metadata: dict[str, Any]) -> str | None:
    """The first loan date a model was not fitted on (its validation rows start there), if known."""
    data = metadata.get("training_data") or {}
    if data.get("validation_from"):
        return str(data["validation_from"])[:10]
    return None


def window_for(dates: np.ndarray, fraction: float, champion_end: str | None, window_from: str | None) -> Window:
    """The comparison window of a snapshot whose loans are dated `dates`."""
    first, last = dates.min(), dates.max()
    if window_from:
        start, why = np.datetime64(window_from, "D"), "pipeline.gate.window_from"
    else:
        span = int((last - first).astype(int))
        start = last - np.timedelta64(int(span * fraction), "D")
        why = f"the last {fraction:.0%} of the date range {_iso(first)} to {_iso(last)}"
    if champion_end is not None and np.datetime64(champion_end, "D") > start:
        start = np.datetime64(champion_end, "D")
        why = f"after the champion's training data (it was fitted on loans before {champion_end})"
    return Window(start=_iso(start), end=_iso(last), why=why)


def read_rows(training_uri: str) -> Frame:
    """The snapshot's training table (local lake), with loan dates."""
    if "://" in training_uri and not training_uri.startswith("file://"):
        raise UserError(f"the gate reads the snapshot's training table from a local lake; {training_uri} is not local")
    return read_channel("gate", Path(training_uri.removeprefix("file://")), need_dates=True, need_loan_id=False)


def loan_dates(frame: Frame) -> np.ndarray:
    """The frame's loan dates (read_rows always reads them)."""
    if frame.loan_date is None:
        raise RuntimeError("the gate's rows have no loan_date (read_rows reads it with need_dates=True)")
    return frame.loan_date


def in_window(frame: Frame, window: Window) -> Frame:
    return frame.take(loan_dates(frame) >= np.datetime64(window.start, "D"))


def score(model_dir: Path, version: str, frame: Frame) -> np.ndarray:
    """Probabilities of the frame's rows from the model in `model_dir`, as the model server computes them."""
    from features.contract import FEATURE_COLUMNS
    from serving.model import ModelSource, load_model

    loaded = load_model(Path(model_dir), ModelSource("registry", version=version), version)
    order = [FEATURE_COLUMNS.index(name) for name in loaded.feature_names]
    rows = frame.features[:, order].tolist()
    return np.asarray(loaded.predict(rows), dtype=np.float64)


def figures(version: str, y: np.ndarray, p: np.ndarray) -> Figures:
    rate = float(y.mean())
    constant = rate * (1 - rate)
    brier = metrics.brier(y, p)
    return Figures(
        version=version,
        roc_auc=metrics.roc_auc(y, p),
        brier=brier,
        brier_skill=1 - brier / constant if constant > 0 else float("nan"),
    )


def decide(
    challenger: Figures, champion: Figures | None, rows: int, positives: int, gate, forced: bool, window: Window
) -> Decision:
    """Apply the rules; every failed rule is named in the reason."""
    used = f"{rows:,} rows, {positives:,} positives, loans from {window.start}"
    failed = []
    if challenger.roc_auc < gate.min_auc:
        failed.append(f"AUC {challenger.roc_auc:.4f} < floor {gate.min_auc:g}")
    if not challenger.brier_skill >= gate.min_brier_skill:
        failed.append(f"Brier skill {challenger.brier_skill:+.3f} < {gate.min_brier_skill:g}")
    if champion is not None:
        if challenger.roc_auc < champion.roc_auc - gate.max_auc_drop:
            failed.append(
                f"AUC {challenger.roc_auc:.4f} more than {gate.max_auc_drop:g} below the champion's "
                f"{champion.roc_auc:.4f}"
            )
        if challenger.brier > champion.brier * (1 + gate.max_brier_rise):
            failed.append(
                f"Brier {challenger.brier:.5f} more than {gate.max_brier_rise:.0%} above the champion's "
                f"{champion.brier:.5f}"
            )
    against = f" vs champion {champion.text()}" if champion else " (no champion: absolute rules only)"
    figures_text = f"challenger {challenger.text()}{against} on {used}"
    if failed and forced:
        reason = f"promoted by --force although it fails the gate ({'; '.join(failed)}): {figures_text}"
    elif failed:
        reason = f"refused: {'; '.join(failed)}: {figures_text}"
    else:
        reason = ("promoted by --force; it passes the gate too: " if forced else "passes the gate: ") + figures_text
    return Decision(
        promote=forced or not failed,
        reason=reason,
        rows=rows,
        positives=positives,
        window=asdict(window),
        challenger=asdict(challenger),
        champion=asdict(champion) if champion else None,
        forced=forced,
    )


def too_few(rows: int, positives: int, gate, forced: bool, window: Window | None, why: str = "") -> Decision:
    short = f"{rows:,} rows and {positives:,} positives in the window" + (f" from {window.start}" if window else "")
    need = (
        f"at least {gate.min_rows:,} rows and {gate.min_positives:,} positives (pipeline.gate.min_rows, min_positives)"
    )
    detail = f"{short}{why}; the gate needs {need}"
    if forced:
        return Decision(
            promote=True,
            reason=f"promoted by --force without judging: {detail}",
            rows=rows,
            positives=positives,
            window=asdict(window) if window else None,
            challenger=None,
            champion=None,
            forced=True,
        )
    return Decision(
        promote=False,
        reason=f"refused: too few rows to judge: {detail}",
        rows=rows,
        positives=positives,
        window=asdict(window) if window else None,
        challenger=None,
        champion=None,
    )


def judge(
    frame: Frame, window: Window, challenger: tuple[str, Path], champion: tuple[str, Path] | None, gate, forced: bool
) -> Decision:
    """Score both models on the window's rows of `frame` and decide."""
    rows = in_window(frame, window)
    y = rows.label.astype(np.int64)
    positives = int(y.sum())
    if len(rows) < gate.min_rows or positives < gate.min_positives or positives == len(rows):
        return too_few(len(rows), positives, gate, forced, window)
    mine = figures(challenger[0], y, score(challenger[1], challenger[0], rows))
    theirs = figures(champion[0], y, score(champion[1], champion[0], rows)) if champion else None
    return decide(mine, theirs, len(rows), positives, gate, forced, window)


def window_start_day(window: Window) -> dt.date:
    return dt.date.fromisoformat(window.start)
