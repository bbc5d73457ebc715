"""The monitoring report: one self-contained HTML page (inline CSS, plots as base64 PNG, nothing fetched).

Sections (each an element with its id, which the browser test looks for):
    #summary            the snapshot, the alert and its reason, the one-line summary
    #problems           what could not be measured, and why
    #feature-drift      per feature and comparison: reference and current shares in the
                        reference's quantile bins overlaid, with PSI, KS and missing shares
    #prediction-drift   served probabilities against the validation scores, same bins
    #realized-quality   per model version: matched predictions, ROC-AUC, Brier, the
                        calibration plot, and the realized AUC over time (every monitored snapshot)

Rendered from the stored results only (monitoring.store), so the console can serve it cheaply.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from itertools import pairwise

import pandas as pd

from configuration.errors import UserError
from configuration.settings import Settings
from monitoring import figures, store

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em;display:block;overflow-x:auto}th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.alert{background:#fdd}.warn{background:#ffe9b3}.ok{background:#e3f6e3}
.banner{padding:.8em 1em;border-radius:4px;margin:1em 0}.plots{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}figcaption{font-size:.85em;color:#555}code{background:#f4f4f4;padding:0 .2em}
"""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def bin_labels(edges: list[float], missing_bin: bool) -> list[str]:
    def num(v: float) -> str:
        return f"{v:.4g}"

    if not edges:
        labels = ["all"]
    else:
        labels = (
            [f"< {num(edges[0])}"] + [f"[{num(a)}, {num(b)})" for a, b in pairwise(edges)] + [f"≥ {num(edges[-1])}"]
        )
    return labels + (["missing"] if missing_bin else [])


def histogram_png(bins: dict, title: str) -> str:
    plt = _pyplot()
    labels = bin_labels(bins["edges"], bins["missing_bin"])
    positions = range(len(labels))
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    ax.bar([p - 0.2 for p in positions], bins["reference"], width=0.4, label="reference", color="#4c72b0")
    ax.bar([p + 0.2 for p in positions], bins["current"], width=0.4, label="current", color="#dd8452")
    ax.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def calibration_png(bins: list[dict], title: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    predicted = [b["predicted"] for b in bins]
    observed = [b["observed"] for b in bins]
    top = max(predicted + observed + [1e-3]) * 1.05
    ax.plot([0, top], [0, top], color="#999", linestyle="--", linewidth=1, label="perfect")
    ax.plot(predicted, observed, marker="o", color="#4c72b0", label="realized")
    ax.set_xlabel("mean predicted")
    ax.set_ylabel("observed rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def auc_over_time_png(history: pd.DataFrame) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3))
    for version, rows in history.groupby("model_version"):
        rows = rows.sort_values("computed_at")
        ax.plot(pd.to_datetime(rows["computed_at"]), rows["roc_auc"], marker="o", label=f"model {version}")
    ax.set_ylabel("realized ROC-AUC")
    ax.set_title("Realized ROC-AUC at each monitored snapshot", fontsize=9)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return _png(fig)


def _status(value: str) -> str:
    css = value if value in ("ok", "warn", "alert") else ""
    return f'<td class="l {css}">{html.escape(value)}</td>'


def _img(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def feature_section(drift: pd.DataFrame) -> str:
    rows, plots = [], []
    for r in drift.to_dict("records"):
        rows.append(
            "<tr>"
            + f'<td class="l">{_fmt(r["comparison"])}</td><td class="l">{_fmt(r["feature"])}</td>'
            + _status(r["status"])
            + "".join(
                f"<td>{_fmt(r[k])}</td>"
                for k in (
                    "psi",
                    "ks_statistic",
                    "ks_pvalue",
                    "reference_rows",
                    "current_rows",
                    "reference_missing_share",
                    "current_missing_share",
                )
            )
            + f'<td class="l">{_fmt(r["reference_run_id"])}</td><td class="l">{_fmt(r["note"])}</td></tr>'
        )
        if r["bins_json"]:
            title = (
                f"{r['feature']} ({r['comparison']}): PSI {r['psi']:.3f}, KS {r['ks_statistic']:.3f} — {r['status']}"
            )
            plots.append(_img(histogram_png(json.loads(r["bins_json"]), title), title))
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "comparison",
            "feature",
            "status",
            "PSI",
            "KS",
            "KS p-value",
            "reference rows",
            "current rows",
            "reference missing",
            "current missing",
            "reference snapshot",
            "note",
        )
    )
    return (
        '<section id="feature-drift"><h2>Feature drift</h2>'
        "<p><b>training</b>: the snapshot's most recent training rows against those of the snapshot the production model "
        "was trained on; <b>latest</b>: the latest table against the previous snapshot's. Bars: share of rows in the "
        "reference's quantile bins (missing values in a bin of their own).</p>"
        f'<table><tr>{head}</tr>{"".join(rows)}</table><div class="plots">{"".join(plots)}</div></section>'
    )


def prediction_section(prediction: pd.DataFrame) -> str:
    if prediction is None or prediction.empty:
        return '<section id="prediction-drift"><h2>Prediction drift</h2><p>Not measured.</p></section>'
    r = prediction.iloc[0].to_dict()
    cells = [
        ("model version", r["model_version"]),
        ("status", r["status"]),
        ("PSI", r["psi"]),
        ("KS", r["ks_statistic"]),
        ("KS p-value", r["ks_pvalue"]),
        ("served in window", r["served_rows"]),
        ("served by other versions", r["other_version_rows"]),
        ("validation scores", r["reference_rows"]),
        ("share labelled positive (served)", r["served_positive_share"]),
        ("share at or above the threshold (validation)", r["reference_positive_share"]),
        ("threshold", r["threshold"]),
        ("window", f"{r['window_start']} to {r['window_end']}"),
        ("note", r["note"]),
    ]
    table = "".join(f'<tr><th class="l">{html.escape(k)}</th><td class="l">{_fmt(v, 4)}</td></tr>' for k, v in cells)
    plot = ""
    if r["bins_json"]:
        title = f"served probabilities vs validation scores: PSI {r['psi']:.3f}"
        plot = _img(histogram_png(json.loads(r["bins_json"]), title), title)
    return f'<section id="prediction-drift"><h2>Prediction drift</h2><table>{table}</table>{plot}</section>'


def quality_section(quality: pd.DataFrame | None, history: pd.DataFrame) -> str:
    parts = [
        '<section id="realized-quality"><h2>Realized quality</h2>',
        (
            "<p>A prediction's outcome is the status of the customer's first loan dated on or after the prediction's "
            "feature snapshot <code>as_of</code>, in this snapshot's loans; one prediction per model version, customer "
            "and snapshot (the last served).</p>"
        ),
    ]
    if quality is None or quality.empty:
        parts.append("<p>No realized quality: no prediction was served yet, or none has an outcome.</p>")
    else:
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "model version",
                "status",
                "served",
                "distinct",
                "matched",
                "positives",
                "ROC-AUC",
                "Brier",
                "note",
            )
        )
        rows = "".join(
            f'<tr><td class="l">{_fmt(q["model_version"])}</td>'
            + _status(q["status"])
            + "".join(
                f"<td>{_fmt(q[k], 4)}</td>"
                for k in (
                    "served_predictions",
                    "distinct_predictions",
                    "matched_predictions",
                    "positives",
                    "roc_auc",
                    "brier",
                )
            )
            + f'<td class="l">{_fmt(q["note"])}</td></tr>'
            for q in quality.to_dict("records")
        )
        parts.append(f"<table><tr>{head}</tr>{rows}</table>")
        plots = [
            _img(
                calibration_png(
                    json.loads(q["calibration_json"]), f"model {q['model_version']}: calibration by decile"
                ),
                f"model {q['model_version']}: calibration by decile",
            )
            for q in quality.to_dict("records")
            if q["calibration_json"]
        ]
        parts.append(f'<div class="plots">{"".join(plots)}</div>')
    measured = history.dropna(subset=["roc_auc"]) if not history.empty else history
    if measured.empty:
        parts.append("<p>AUC over time: no snapshot has a realized ROC-AUC yet.</p>")
    else:
        parts.append(_img(auc_over_time_png(measured), "realized ROC-AUC over time"))
    return "".join(parts) + "</section>"


def render(
    run_id: str,
    latest: dict | None,
    drift: pd.DataFrame,
    prediction: pd.DataFrame | None,
    quality: pd.DataFrame | None,
    history: pd.DataFrame,
) -> str:
    alert = latest.get("alert") if latest else None
    reason = latest.get("reason", "") if latest else ""
    summary = latest.get("summary", "") if latest else ""
    problems = latest.get("problems", []) if latest else []
    banner_class = "alert" if alert else "ok"
    banner = (
        f'<div class="banner {banner_class}"><b>{"ALERT" if alert else "No alert"}</b>: {html.escape(reason)}</div>'
        if latest
        else ""
    )
    problem_list = "".join(f"<li>{html.escape(p)}</li>" for p in problems) or "<li>none: everything was measured</li>"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>sparkmaker monitoring: {html.escape(run_id)}</title>'
        f"<style>{STYLE}</style></head><body>"
        f'<section id="summary"><h1>Monitoring report: snapshot {html.escape(run_id)}</h1>{banner}'
        f"<p>{html.escape(summary)}</p>"
        f"<p>Computed at {html.escape(str(latest.get('computed_at', ''))) if latest else '–'}.</p></section>"
        f'<section id="problems"><h2>What could not be measured</h2><ul>{problem_list}</ul></section>'
        + feature_section(drift)
        + prediction_section(prediction)
        + quality_section(quality, history)
        + "</body></html>"
    )


def report_html(settings: Settings, run_id: str | None = None) -> str:
    """The report of a monitored snapshot (default: the latest monitored one), from the stored results."""
    latest = figures.read_latest(settings)
    if run_id is None:
        if latest is None:
            return (
                '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>sparkmaker monitoring</title></head>'
                '<body><section id="summary"><h1>Monitoring report</h1><p>No drift step has run yet: run '
                "<code>python -m monitoring drift</code> after a feature run.</p></section></body></html>"
            )
        run_id = latest["snapshot_run_id"]
    drift = store.read_results(settings, run_id, "drift")
    if drift is None:
        raise UserError(f"snapshot {run_id} was not monitored yet: run python -m monitoring drift --snapshot {run_id}")
    if latest is not None and latest.get("snapshot_run_id") != run_id:
        latest = snapshot_figures(settings, run_id, drift)
    return render(
        run_id,
        latest,
        drift,
        store.read_results(settings, run_id, "prediction_drift"),
        store.read_results(settings, run_id, "realized_quality"),
        store.history(settings, "realized_quality"),
    )


def snapshot_figures(settings: Settings, run_id: str, drift: pd.DataFrame) -> dict:
    """The summary of an older snapshot, rebuilt from its stored rows (latest.json only holds the newest)."""
    from monitoring.step import drift_problems, summarize, verdict

    prediction = store.read_results(settings, run_id, "prediction_drift")
    stored_quality = store.read_results(settings, run_id, "realized_quality")
    pred = prediction.iloc[0].to_dict() if prediction is not None and not prediction.empty else {}
    quality = stored_quality.to_dict("records") if stored_quality is not None else []
    rows = drift.to_dict("records")
    alert, reason = verdict(rows, quality, pred.get("model_version"), settings)  # the production version then
    return {
        "snapshot_run_id": run_id,
        "computed_at": rows[0]["computed_at"] if rows else "",
        "alert": alert,
        "reason": reason,
        "summary": summarize(run_id, rows, pred, quality),
        "problems": drift_problems(rows),
    }
