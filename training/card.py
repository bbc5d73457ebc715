"""The human model card: `model-card.md` with a ROC plot (`roc.png`) and a calibration plot (`calibration.png`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training import artifact, metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display in a container
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    path: Path, y: np.ndarray, p: np.ndarray, p_true: np.ndarray | None, y_true_rows: np.ndarray | None
) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    fpr, tpr, _ = metrics.roc_curve(y, p)
    axes.plot(fpr, tpr, label=f"model (AUC {metrics.roc_auc(y, p):.3f})")
    if p_true is not None and y_true_rows is not None:
        fpr_t, tpr_t, _ = metrics.roc_curve(y_true_rows, p_true)
        axes.plot(
            fpr_t, tpr_t, linestyle="--", label=f"true probabilities (AUC {metrics.roc_auc(y_true_rows, p_true):.3f})"
        )
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC on the validation rows")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_calibration(path: Path, bins: list[dict[str, float]]) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    predicted = [b["predicted"] for b in bins]
    observed = [b["observed"] for b in bins]
    top = max(max(predicted), max(observed), 1e-3) * 1.1
    axes.plot([0, top], [0, top], color="grey", linewidth=0.8, label="perfect calibration")
    axes.plot(predicted, observed, marker="o", label="model (deciles of prediction)")
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed rate of status = 1")
    axes.set_title("Calibration on the validation rows")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render(metadata: dict[str, Any], bins: list[dict[str, float]], notes: dict[str, str]) -> str:
    m = metadata["metrics"]
    cm = m["confusion_matrix"]
    data = metadata["training_data"]
    hps = metadata["hyperparameters"]
    lines = [
        "# Model card: credit risk (probability that a loan goes bad)",
        "",
        f"- Learner: XGBoost `binary:logistic`, `hist`; {notes['rounds']} trees; created {metadata['created_at']}; "
        f"code {metadata['code_version']}.",
        f"- Model file: `{artifact.MODEL_FILE}` (XGBoost JSON), sha256 `{metadata['model_sha256']}`.",
        f"- Inputs, in this order: {', '.join(f'`{n}`' for n in metadata['feature_names'])}. "
        "Missing values (NULL) are passed as missing, not as zeros. `id`, `loan_id` and `loan_date` are never inputs.",
        f"- Output: the probability that `status = 1`. Decision: flag the loan when the probability is "
        f">= **{metadata['threshold']:.6f}** ({notes['threshold_rule']}).",
        "",
        "## Data",
        "",
        f"- Feature snapshot: run `{data.get('run_id') or 'unknown'}`, `{data.get('uri') or 'unknown'}`.",
        f"- Split: {data['split']}.",
        f"- Rows: {data['rows_train']:,} training, {data['rows_validation']:,} validation; "
        f"status = 1 in {notes['train_rate']} of training rows and {m['positive_rate']:.2%} of validation rows.",
        f"- Class imbalance: scale_pos_weight {notes['weight']} (computed on the training part only, after the split)"
        + (
            "; predicted probabilities are corrected back to the unweighted scale."
            if notes["weight"] != "1"
            else "; the imbalance is handled by the decision threshold chosen on validation."
        ),
        f"- Early stopping: {notes['early_stopping']}.",
        "",
        "## Validation metrics",
        "",
        "| metric | value |",
        "|---|---|",
        f"| ROC-AUC | {_fmt(m['roc_auc'])} |",
        f"| ROC-AUC of the true probabilities (ceiling) | {_fmt(m.get('ceiling_roc_auc'))} |",
        f"| PR-AUC (average precision) | {_fmt(m['pr_auc'])} |",
        f"| log loss | {_fmt(m['log_loss'])} |",
        f"| Brier score | {_fmt(m['brier'])} |",
        f"| precision at the threshold | {_fmt(m['precision'])} |",
        f"| recall at the threshold | {_fmt(m['recall'])} |",
        "",
        f"Confusion matrix at the threshold: {cm['tp']:,} true positives, {cm['fp']:,} false positives, "
        f"{cm['tn']:,} true negatives, {cm['fn']:,} false negatives.",
        "",
        "The threshold was chosen on these same validation rows, so precision and recall at it are "
        "slightly optimistic; the AUCs, log loss and Brier score do not depend on it.",
        "",
        f"![ROC]({artifact.ROC_FILE})",
        "",
        f"![Calibration]({artifact.CALIBRATION_FILE})",
        "",
        "| predicted (bin mean) | observed | rows |",
        "|---|---|---|",
        *[f"| {b['predicted']:.4f} | {b['observed']:.4f} | {b['rows']:,} |" for b in bins],
        "",
        "## Hyperparameters",
        "",
        "| name | value |",
        "|---|---|",
        *[f"| {k} | {'-' if v is None or v == '' else v} |" for k, v in hps.items()],
        "",
        "## Limits",
        "",
        "- Trained on the five contract features only; it knows nothing about the applicant's income or the new loan's amount.",
        "- Validated on later loans than it was trained on; performance drifts as the population changes: retrain on new snapshots.",
        "",
    ]
    return "\n".join(lines)


def write_card(
    model_dir: Path,
    metadata: dict[str, Any],
    y: np.ndarray,
    p: np.ndarray,
    truth_y: np.ndarray | None,
    truth_p: np.ndarray | None,
    notes: dict[str, str],
) -> list[dict[str, float]]:
    bins = metrics.calibration_bins(y, p, bins=10)
    plot_roc(model_dir / artifact.ROC_FILE, y, p, truth_p, truth_y)
    plot_calibration(model_dir / artifact.CALIBRATION_FILE, bins)
    (model_dir / artifact.CARD_FILE).write_text(render(metadata, bins, notes), encoding="utf-8")
    return bins
