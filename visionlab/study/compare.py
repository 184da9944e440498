"""Comparison across experiments: the bar chart, confusion matrices side by side, and
observations written from the measured numbers (and marked as generated in the report).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..evaluation.plots import short  # noqa: E402


def plot_accuracy_bars(experiments: list[dict], path: Path) -> Path:
    names = [e["name"] for e in experiments]
    test = [100 * e["test_accuracy"] for e in experiments]
    val = [100 * (e["val_accuracy"] if e["val_accuracy"] == e["val_accuracy"] else 0) for e in experiments]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4.2))
    ax.bar(x - 0.2, val, 0.4, label="validation", color="#9ecae1")
    bars = ax.bar(x + 0.2, test, 0.4, label="test", color="#3182bd")
    for bar, value in zip(bars, test):
        ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.1f}", ha="center", va="bottom", fontsize=9)
    low = max(0.0, min(test + val) - 10)
    ax.set_ylim(low, 100.5)
    ax.set_xticks(x, [short(n, 20) for n in names], rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy by experiment")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # outside: never over a bar
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusions(experiments: list[dict], classes: list[str], path: Path) -> Path:
    """Row-normalised confusion matrices, one panel per experiment, same colour scale."""
    n = len(experiments)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    k = len(classes)
    side = min(3 + 0.25 * k, 7)
    # 0.7 in a row for its two-line title and the x label: the square panels leave tight_layout none
    fig, axes = plt.subplots(rows, cols, figsize=(cols * side, rows * (side + 0.7)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, e in zip(axes.flat, experiments):
        cm = np.asarray(e["confusion_matrix"], float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.axis("on")
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{short(e['name'], 24)}\n{100 * e['test_accuracy']:.2f}% test", fontsize=10)
        ticks = np.arange(k)
        labels = [short(c, 10) for c in classes] if k <= 20 else []
        ax.set_xticks(ticks if labels else [], labels, rotation=90, fontsize=7)
        ax.set_yticks(ticks if labels else [], labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.tight_layout(h_pad=1.5)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def observations(experiments: list[dict], classes: list[str]) -> list[str]:
    """Plain sentences from the measured numbers; nothing here is a judgement not in the data."""
    if not experiments:
        return []
    notes = []
    best = max(experiments, key=lambda e: (e["test_accuracy"], e["test_macro_f1"]))
    notes.append(f"Best test accuracy: {best['name']} ({best['model']}) with {_pct(best['test_accuracy'])} "
                 f"(macro F1 {best['test_macro_f1']:.4f}).")
    worst = min(experiments, key=lambda e: e["test_accuracy"])
    if worst is not best:
        notes.append(f"Lowest: {worst['name']} with {_pct(worst['test_accuracy'])}, "
                     f"{100 * (best['test_accuracy'] - worst['test_accuracy']):.2f} points below the best.")
    by_model: dict[str, list[dict]] = {}
    for e in experiments:
        by_model.setdefault(e["model"], []).append(e)
    for model, group in by_model.items():
        plain = [e for e in group if e["augment"] in ("none", [], "")]
        augmented = [e for e in group if e not in plain]
        for a in augmented:
            for p in plain[:1]:
                delta = 100 * (a["test_accuracy"] - p["test_accuracy"])
                verb = "raised" if delta > 0 else "lowered" if delta < 0 else "did not change"
                amount = f" by {abs(delta):.2f} points" if delta else ""
                notes.append(f"Augmentation ({a['augment']}) {verb} {model}'s test accuracy{amount} "
                             f"({p['name']} {_pct(p['test_accuracy'])} → {a['name']} {_pct(a['test_accuracy'])}).")
    overfit = [e for e in experiments if e.get("overfit", {}).get("flag")]
    for e in overfit:
        notes.append(f"{e['name']} overfits: {e['overfit'].get('note', '').removeprefix('Overfitting: ')}".strip())
    pairs: dict[tuple[str, str], int] = {}
    for e in experiments:
        for c in e.get("misclassification", {}).get("top_confusions", []):
            pairs[(c["true"], c["predicted"])] = pairs.get((c["true"], c["predicted"]), 0) + c["count"]
    if pairs:
        top = sorted(pairs.items(), key=lambda kv: -kv[1])[:3]
        notes.append("Most confused across experiments (true → predicted, errors summed): "
                     + "; ".join(f"{t} → {p} ({n})" for (t, p), n in top) + ".")
    fractions = [(e["name"], e["misclassification"]["closer_to_predicted_fraction"]) for e in experiments
                 if e.get("misclassification", {}).get("n_errors")]
    if fractions:
        mean = float(np.mean([f for _, f in fractions]))
        notes.append(f"On average {_pct(mean)} of the errors lie closer (in feature space) to the predicted "
                     "class's centroid than to their own: the model sees them as the other class, not as "
                     "ambiguous in-between points." if mean > 0.5 else
                     f"On average only {_pct(mean)} of the errors lie closer to the predicted class's centroid: "
                     "most mistakes sit between classes rather than inside the wrong one.")
    scratch = [e for e in experiments if e["model"].startswith(("resnet", "timm:")) and not e.get("pretrained_used")]
    for e in scratch:
        note = e.get("pretrained_note") or "ImageNet weights were not available"
        notes.append(f"{e['name']} trained {note}." if note.startswith("from scratch") else
                     f"{e['name']} trained from scratch: {note}.")
    fastest = max(experiments, key=lambda e: e["train_images_per_second"])
    notes.append(f"Fastest training: {fastest['name']} at {fastest['train_images_per_second']:,.0f} images/s "
                 f"({fastest['train_seconds']:.1f} s for {fastest['epochs']} epochs).")
    return notes
