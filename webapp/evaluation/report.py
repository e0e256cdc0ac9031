"""The evaluation report: ``report.json`` (every figure) and ``report.html`` (the same, readable).

The HTML is rendered from the JSON data alone, so the two cannot disagree. It
is one self-contained file: styles inline, plots drawn with matplotlib into
PNG data URIs, no script, and a Content-Security-Policy that forbids loading
anything, so opening it never contacts a server.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np

from . import metrics

FORMAT_VERSION = 1
_COLOURS = ("#1f5fa8", "#c2571a")  # arm A, arm B: distinguishable by colour-blind readers, and labelled


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False, default=_plain) + "\n"


def _plain(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_report(out_dir: Path, report: dict) -> tuple[Path, Path]:
    """Write report.json and report.html into ``out_dir`` (created if needed); nothing else."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    text = to_json(report)
    html = render_html(json.loads(text))
    json_path.write_text(text, encoding="utf-8")
    html_path.write_text(html, encoding="utf-8")
    return json_path, html_path


# ------------------------------------------------------------------ plots


def _figure(width: float = 5.0, height: float = 4.0):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_plot(matrix: dict, labels: dict[str, str], title: str) -> str:
    counts = np.asarray(matrix["counts"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(3.5, 0.55 * counts.shape[1] + 2.5)
    figure = _figure(size, max(3.0, 0.5 * counts.shape[0] + 2.0))
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(counts):
        axes.text(j, i, f"{int(value)}", ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    axes.set_xticks(range(counts.shape[1]), [labels.get(c, c) for c in matrix["predicted"]], rotation=40, ha="right")
    axes.set_yticks(range(counts.shape[0]), [labels.get(c, c) for c in matrix["true"]])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    return _data_uri(figure)


def roc_plot(curves: list[tuple[str, np.ndarray, np.ndarray, float]], title: str) -> str:
    figure = _figure(4.5, 4.2)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", label="chance")
    for index, (name, fpr, tpr, area) in enumerate(curves):
        axes.plot(fpr, tpr, color=_COLOURS[index % 2], linestyle="-" if index == 0 else "--", label=f"{name} (AUROC {area:.3f})")
    axes.set_xlabel("1 - specificity (false-positive rate)")
    axes.set_ylabel("sensitivity (true-positive rate)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    return _data_uri(figure)


def reliability_plot(arms: list[tuple[str, list[dict]]]) -> str:
    figure = _figure(4.5, 4.2)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", label="perfect calibration")
    for index, (name, bins) in enumerate(arms):
        used = [b for b in bins if b["count"]]
        axes.plot(
            [b["confidence"] for b in used],
            [b["accuracy"] for b in used],
            marker="o" if index == 0 else "s",
            color=_COLOURS[index % 2],
            linestyle="-" if index == 0 else "--",
            label=name,
        )
    axes.set_xlabel("mean confidence of the prediction (per bin)")
    axes.set_ylabel("share of predictions that were right")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_title("Reliability")
    axes.legend(loc="upper left", fontsize="small")
    return _data_uri(figure)


def bars_plot(categories: list[str], series: list[tuple[str, list[float | None]]], ylabel: str, title: str) -> str:
    figure = _figure(max(4.5, 0.7 * len(categories) * len(series) + 2), 3.6)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(categories))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = axes.bar(positions, heights, width=width, color=_COLOURS[index % 2], label=name,
                        hatch=None if index == 0 else "//")
        for bar, value in zip(bars, values):
            text = "n/a" if value is None else f"{value:.2f}"
            axes.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, text, ha="center", va="bottom",
                      fontsize="x-small")
    axes.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    axes.set_ylim(0, 1.12)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if len(series) > 1:
        axes.legend(fontsize="small")
    return _data_uri(figure)


# ------------------------------------------------------------------ HTML


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
    return str(value)


def _ci(interval) -> str:
    return "" if not interval else f" [{interval[0]:.2f}, {interval[1]:.2f}]"


SUMMARY_ROWS = (
    ("n", "images analysed"),
    ("accuracy", "accuracy (top-1)"),
    ("balanced_accuracy", "balanced accuracy"),
    ("melanoma_vs_rest_auroc", "melanoma-vs-rest AUROC"),
    ("high_risk_vs_rest_auroc", "high-risk-vs-rest AUROC"),
    ("macro_auroc", "macro AUROC (one-vs-rest)"),
    ("ece", "expected calibration error"),
    ("not_located", "lesion not located (whole photo analysed)"),
)

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PrivaScan evaluation: {{ dataset.source }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 70rem; padding: 0 1rem; color: #1a1a1a; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #c8c8c8; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eef2f7; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; max-width: 33rem; }
figure img { max-width: 100%; }
.note { background: #fff8e1; border-left: 4px solid #e0a800; padding: 0.5rem 0.8rem; }
</style>
</head>
<body>
<h1>PrivaScan evaluation</h1>
<p class="note">Figures from {{ summary_n }} labelled images on this machine. Small numbers give wide
confidence intervals (shown in brackets, 95 % Wilson). A triage aid measured here is not a validated
diagnostic test.</p>

<h2>What was measured</h2>
<table>
<tr><th>dataset</th><td>{{ dataset.source }} ({{ dataset.kind }})</td></tr>
<tr><th>images</th><td>{{ dataset.images }} listed, {{ dataset.analysed }} analysed, {{ dataset.skipped|length }} skipped</td></tr>
<tr><th>clinical app</th><td>{{ settings.app }}; localizer {{ settings.localizer }}; classifier: {{ settings.classifier }}</td></tr>
{% for arm in arms %}<tr><th>arm {{ arm.key }}</th><td>{{ arm.description }} ({{ arm.origin }})</td></tr>
{% endfor %}<tr><th>adapter</th><td>{% if settings.adapter %}arm B is adapter {{ settings.adapter.id }}
({{ settings.adapter.method|replace("_", " ") }}, fitted {{ settings.adapter.fitted_at }}, template set {{ settings.adapter.template_set }}),
predicting among its {{ settings.adapter.conditions|length }} conditions only; measured on
{% if settings.adapter_split.kind == "test" %}its held-out test split ({{ settings.adapter_split.images }} images, seed {{ settings.adapter_split.seed }}), which took no part in fitting it
{%- else %}{{ settings.adapter_split.images }} images it never saw (--unseen){% endif %}; arm A is zero-shot, as the app answers without it
{%- else %}no adapter: zero-shot scores{% endif %}</td></tr>
<tr><th>predictions</th><td>{% if settings.restrict_to_mapped %}the most probable of the dataset's conditions only
(probabilities renormalised over them, as zero-shot papers report){% else %}the app's headline: the most probable
condition of the whole bank; a condition the dataset does not contain counts as wrong ({{ other }}){% endif %}</td></tr>
<tr><th>calibration</th><td>{{ settings.ece_bins }} equal-width confidence bins</td></tr>
</table>

<h3>Label mapping</h3>
<table>
<tr><th>dataset label</th><th>condition</th><th>images</th></tr>
{% for label, row in dataset.labels.items() %}<tr><td>{{ label }}</td><td>{{ row.condition }}</td><td class="num">{{ row.images }}</td></tr>
{% endfor %}</table>

<h2>Summary</h2>
<table>
<tr><th>metric</th>{% for arm in arms %}<th>arm {{ arm.key }}</th>{% endfor %}{% if arms|length > 1 %}<th>B - A</th>{% endif %}</tr>
{% for row in summary %}<tr><th>{{ row.label }}</th>{% for value in row.cells %}<td class="num">{{ value }}</td>{% endfor %}{% if arms|length > 1 %}<td class="num">{{ row.diff }}</td>{% endif %}</tr>
{% endfor %}</table>
{% if comparison %}<p>On the same images: both right {{ comparison.both_correct }}, only A right {{ comparison.only_first_correct }},
only B right {{ comparison.only_second_correct }}, both wrong {{ comparison.both_wrong }}{% if comparison.same_prediction is defined %}; the same top-1 on {{ comparison.same_prediction }}{% endif %}; exact McNemar
p = {{ fmt(comparison.mcnemar_exact_p) }} (a small p says the two differ beyond chance).</p>{% endif %}

<h2>Per condition</h2>
{% for arm in arms %}<h3>Arm {{ arm.key }}: {{ arm.description }}</h3>
<table>
<tr><th>condition</th><th>images</th><th>sensitivity</th><th>specificity</th><th>AUROC</th><th>alert threshold</th><th>alert sensitivity</th><th>alert specificity</th></tr>
{% for cid, row in arm.metrics.per_class.items() %}<tr><td>{{ row.label }} ({{ cid }})</td><td class="num">{{ row.n }}</td>
<td class="num">{{ fmt(row.sensitivity) }}{{ ci(row.sensitivity_ci95) }}</td><td class="num">{{ fmt(row.specificity) }}{{ ci(row.specificity_ci95) }}</td>
<td class="num">{{ fmt(row.auroc) }}</td><td class="num">{{ fmt(row.alert_threshold) }}</td>
<td class="num">{{ fmt(row.alert_sensitivity) }}</td><td class="num">{{ fmt(row.alert_specificity) }}</td></tr>
{% endfor %}</table>
{% if arm.metrics.other_predictions %}<p>Predicted conditions the dataset does not contain:
{% for cid, count in arm.metrics.other_predictions.items() %}{{ cid }} ({{ count }}){% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
{% endfor %}

<h2>Plots</h2>
{% for plot in plots %}<figure><img src="{{ plot.uri }}" alt="{{ plot.alt }}"><figcaption>{{ plot.caption }}</figcaption></figure>
{% endfor %}

{% if dataset.subgroup_column %}<h2>By {{ dataset.subgroup_column }}</h2>
{% for arm in arms %}<h3>Arm {{ arm.key }}</h3>
<table>
<tr><th>{{ dataset.subgroup_column }}</th><th>images</th><th>accuracy</th><th>balanced accuracy</th><th>melanoma AUROC</th><th>macro AUROC</th><th>ECE</th><th>not located</th></tr>
{% for name, m in arm.subgroups.items() %}<tr><td>{{ name }}</td><td class="num">{{ m.n }}</td><td class="num">{{ fmt(m.accuracy) }}</td>
<td class="num">{{ fmt(m.balanced_accuracy) }}</td><td class="num">{{ fmt(m.melanoma_vs_rest_auroc) }}</td>
<td class="num">{{ fmt(m.macro_auroc) }}</td><td class="num">{{ fmt(m.ece) }}</td><td class="num">{{ m.not_located }}</td></tr>
{% endfor %}</table>
{% endfor %}{% endif %}

{% if thresholds %}<h2>Fitted alert thresholds (arm A)</h2>
<p>{{ thresholds.validation_images }} validation and {{ thresholds.held_out_images }} held-out images
(stratified split {{ thresholds.validation_split }}, seed {{ thresholds.seed }}).
{% if thresholds.overrides_file %}Written to {{ thresholds.overrides_file }}.{% endif %}</p>
<table>
<tr><th>condition</th><th>target sensitivity</th><th>fitted threshold</th><th>validation sensitivity</th>
<th>held-out sensitivity</th><th>held-out specificity</th><th>current threshold</th><th>its held-out sensitivity</th><th>its held-out specificity</th></tr>
{% for cid, row in thresholds.conditions.items() %}<tr><td>{{ cid }}</td><td class="num">{{ fmt(row.target_sensitivity) }}</td>
<td class="num">{{ row.threshold }}</td><td class="num">{{ fmt(row.validation.sensitivity) }}</td>
<td class="num">{{ fmt(row.held_out.sensitivity) }}{{ ci(row.held_out.sensitivity_ci95) }}</td>
<td class="num">{{ fmt(row.held_out.specificity) }}{{ ci(row.held_out.specificity_ci95) }}</td>
<td class="num">{{ row.current_threshold }}</td><td class="num">{{ fmt(row.current_held_out.sensitivity) }}</td>
<td class="num">{{ fmt(row.current_held_out.specificity) }}</td></tr>
{% endfor %}</table>{% endif %}

{% if calibration %}<h2>Calibration (temperature scaling, arm A)</h2>
<p>Temperature {{ calibration.temperature }} fitted on {{ calibration.validation_images }} validation images;
measured on {{ calibration.held_out_images }} held-out images.
{% if calibration.overrides_file %}Written to {{ calibration.overrides_file }}.{% endif %}</p>
<table>
<tr><th>split</th><th>ECE before</th><th>ECE after</th><th>NLL before</th><th>NLL after</th></tr>
{% for split in ("validation", "held_out") %}<tr><td>{{ split.replace("_", "-") }}</td>
<td class="num">{{ fmt(calibration[split].before.ece) }}</td><td class="num">{{ fmt(calibration[split].after.ece) }}</td>
<td class="num">{{ fmt(calibration[split].before.nll) }}</td><td class="num">{{ fmt(calibration[split].after.nll) }}</td></tr>
{% endfor %}</table>{% endif %}

{% if out_of_scope %}<h2>Scope gate on out-of-scope pictures</h2>
<p>{{ out_of_scope.images }} pictures: {{ out_of_scope.rejected }} rejected, {{ out_of_scope.not_judged }} not judged
(the model cannot judge scope, e.g. demo weights), rejection rate {{ fmt(out_of_scope.rejection_rate) }};
{{ out_of_scope.colour_check_failed }} failed the deterministic colour check.</p>{% endif %}

{% if dataset.skipped %}<h2>Skipped images</h2>
<ul>{% for item in dataset.skipped[:100] %}<li>{{ item.path }}: {{ item.reason }}</li>{% endfor %}
{% if dataset.skipped|length > 100 %}<li>... and {{ dataset.skipped|length - 100 }} more (see report.json)</li>{% endif %}</ul>{% endif %}

<p><small>Written by <code>privascan eval</code>, report format {{ format_version }}. Definitions: docs/evaluation.md.</small></p>
</body>
</html>
"""


def render_html(report: dict) -> str:
    """The report as one HTML page that loads nothing from anywhere."""
    from jinja2 import Environment

    arms = report["arms"]
    condition_labels = {cid: row["label"] for arm in arms for cid, row in arm["metrics"]["per_class"].items()}
    summary = []
    for key, label in SUMMARY_ROWS:
        values = [arm["metrics"].get(key) for arm in arms]
        diff = ""
        if len(values) > 1 and key != "n":
            if None in values:
                diff = "n/a"
            elif all(isinstance(v, int) for v in values):
                diff = f"{values[1] - values[0]:+d}"
            else:
                diff = f"{values[1] - values[0]:+.3f}"
        summary.append({"label": label, "cells": [_fmt(v) for v in values], "diff": diff})
    environment = Environment(autoescape=True, trim_blocks=False)
    template = environment.from_string(_TEMPLATE)
    return template.render(
        **report,
        summary=summary,
        summary_n=report["dataset"]["analysed"],
        plots=_plots(report, condition_labels),
        fmt=_fmt,
        ci=_ci,
        other="shown as (other) in the confusion matrix",
    )


def _plots(report: dict, labels: dict[str, str]) -> list[dict]:
    arms = report["arms"]
    names = [f"arm {arm['key']}" for arm in arms]
    plots = []
    for arm, name in zip(arms, names):
        plots.append({
            "uri": confusion_plot(arm["metrics"]["confusion_matrix"], labels, f"Confusion, {name}"),
            "alt": f"Confusion matrix of {name}",
            "caption": f"Confusion matrix, {name}: rows are the true condition, columns the prediction; colour is the share of the row.",
        })
    images = [image for image in report["images"] if image["analysed"]]
    for target, title, caption in (
        ("melanoma", "Melanoma vs rest", "ROC of P(melanoma): melanoma images against all others."),
        ("high_risk", "High risk vs rest", "ROC of the summed probability of the bank's high-risk conditions."),
    ):
        curves = []
        for arm, name in zip(arms, names):
            if target == "melanoma":
                if "melanoma" not in arm["metrics"]["per_class"]:
                    continue
                scores = [image["arms"][arm["key"]]["probabilities"]["melanoma"] for image in images]
                positive = [image["condition"] == "melanoma" for image in images]
            else:
                scores = [image["arms"][arm["key"]]["high_risk_probability"] for image in images]
                positive = [image["arms"][arm["key"]]["high_risk_truth"] for image in images]
            area = metrics.auroc(scores, positive)
            if area is None:
                continue
            fpr, tpr, _ = metrics.roc_curve(scores, positive)
            curves.append((name, fpr, tpr, area))
        if curves:
            plots.append({"uri": roc_plot(curves, title), "alt": f"ROC curve, {title}", "caption": caption})
            if target == "melanoma":
                break  # the high-risk curve only when melanoma is not in the dataset
    plots.append({
        "uri": reliability_plot([(name, arm["metrics"]["reliability"]) for arm, name in zip(arms, names)]),
        "alt": "Reliability diagram",
        "caption": "Reliability: points on the diagonal are well calibrated; below it, over-confident.",
    })
    classes = list(arms[0]["metrics"]["per_class"])
    plots.append({
        "uri": bars_plot(
            [labels.get(c, c) for c in classes],
            [(name, [arm["metrics"]["per_class"][c]["sensitivity"] for c in classes]) for arm, name in zip(arms, names)],
            "sensitivity",
            "Sensitivity per condition",
        ),
        "alt": "Sensitivity per condition",
        "caption": "Sensitivity (recall) of each condition's prediction.",
    })
    if any(arm.get("subgroups") for arm in arms):
        groups = list(arms[0]["subgroups"])
        plots.append({
            "uri": bars_plot(
                groups,
                [(name, [arm["subgroups"][g]["balanced_accuracy"] for g in groups]) for arm, name in zip(arms, names)],
                "balanced accuracy",
                f"Balanced accuracy by {report['dataset']['subgroup_column']}",
            ),
            "alt": "Balanced accuracy by subgroup",
            "caption": "Balanced accuracy in each subgroup (n in the table below).",
        })
    return plots


# ------------------------------------------------------------------ assembly


def assemble(
    *,
    dataset,
    mapping: dict[str, str],
    settings: dict,
    arms,
    outcomes,
    scores: dict,
    arm_metrics: dict,
    subgroups: dict,
    comparison: dict | None,
    thresholds: dict | None,
    validation=None,
) -> dict:
    """The report as plain data: what ``report.json`` holds and ``report.html`` shows."""
    analysed = [o for o in outcomes if o.analysed]
    label_counts: dict[str, int] = {}
    for o in outcomes:
        label_counts[o.image.label] = label_counts.get(o.image.label, 0) + 1
    images = []
    position = {id(o): i for i, o in enumerate(analysed)}
    for o in outcomes:
        record = {
            "path": o.image.name,
            "label": o.image.label,
            "condition": o.condition,
            "subgroup": o.image.subgroup,
            "analysed": o.analysed,
            "reason": o.reason,
            "located": o.located,
            "box": o.box,
        }
        if o.analysed:
            i = position[id(o)]
            if validation is not None:
                record["split"] = "validation" if validation[i] else "held_out"
            record["arms"] = {}
            for arm in arms:
                s = scores[arm.key]
                entry = {
                    "predicted": s.predicted[i],
                    "confidence": float(s.confidence[i]),
                    "probabilities": {c: float(s.class_probabilities[c][i]) for c in s.classes},
                    "high_risk_probability": float(s.high_risk_probability[i]),
                    "high_risk_truth": bool(s.high_risk_true[i]),
                }
                if settings["restrict_to_mapped"]:
                    entry["bank_probabilities"] = {c: float(s.bank_probabilities[c][i]) for c in s.classes}
                record["arms"][arm.key] = entry
        images.append(record)
    return {
        "format": "privascan-eval",
        "format_version": FORMAT_VERSION,
        "dataset": {
            "source": dataset.source.name,
            "kind": dataset.kind,
            "images": len(outcomes),
            "analysed": len(analysed),
            "skipped": [{"path": o.image.name, "reason": o.reason} for o in outcomes if not o.analysed],
            "labels": {label: {"condition": mapping[label], "images": label_counts[label]} for label in sorted(label_counts)},
            "subgroup_column": dataset.subgroup_column,
        },
        "settings": settings,
        "arms": [
            {
                "key": arm.key,
                "bank": arm.bank.name,
                "template_set": arm.template_set.id,
                "description": arm.describe(),
                "origin": arm.origin,
                "metrics": arm_metrics[arm.key],
                "subgroups": subgroups.get(arm.key, {}),
            }
            for arm in arms
        ],
        "comparison": comparison,
        "thresholds": thresholds,
        "images": images,
    }
