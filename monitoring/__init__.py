"""Monitoring: feature drift, prediction drift and realized quality of the production model, stored, exported, reported.

For other components (imported lazily, so that `monitoring.figures` stays light for the API):

    drift_step(settings, run_id) -> DriftOutcome    the lifecycle's drift step (alert, reason, summary)
    latest(settings) -> dict | None                 the latest stored figures (drift rows, prediction drift, quality)
    report_html(settings, run_id=None) -> str       the self-contained HTML report of a snapshot (default: the latest)
"""

from __future__ import annotations

__all__ = ["DriftOutcome", "drift_step", "latest", "report_html"]


def __getattr__(name: str):
    if name in ("drift_step", "DriftOutcome"):
        from monitoring import step

        return getattr(step, name)
    if name == "latest":
        from monitoring.figures import read_latest

        return read_latest
    if name == "report_html":
        from monitoring.report import report_html

        return report_html
    raise AttributeError(f"module 'monitoring' has no attribute {name!r}")
