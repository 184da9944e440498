"""Overfitting, read from the training history (metrics.jsonl): no model, no data.

Two signs, either one raises the flag:
- a gap: at the best epoch (the one whose weights were kept), train accuracy exceeds validation
  accuracy by more than ``GAP``;
- a trend: validation loss rose over the last ``RISING`` or more epochs while train loss fell,
  by ``MIN_RISE`` or more in all (a flat curve wobbling in the fourth decimal is not a trend).
Train accuracy is measured on the augmented batches during the epoch, so with strong
augmentation the gap understates overfitting; the note says what was measured.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

GAP = 0.05  # train - validation accuracy above this at the best epoch is overfitting
RISING = 2  # consecutive epochs of rising validation loss (with falling train loss) that count
MIN_RISE = 0.05  # ... and the rise over those epochs, relative to where it started


def read_history(path: Path) -> list[dict]:
    """metrics.jsonl: one JSON object per epoch."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def best_epoch(history: list[dict]) -> dict:
    """The epoch the run kept: the first one with the highest validation accuracy (as training does)."""
    scored = [h for h in history if _finite(h.get("val_accuracy"))]
    return max(scored, key=lambda h: h["val_accuracy"]) if scored else history[-1]


def rising_val_loss(history: list[dict]) -> int:
    """How many of the last epochs in a row validation loss rose while train loss fell."""
    n = 0
    for prev, cur in zip(history[-2::-1], history[::-1]):  # (previous, current) pairs, newest first
        values = (prev.get("val_loss"), cur.get("val_loss"), prev.get("train_loss"), cur.get("train_loss"))
        if not all(_finite(v) for v in values) or not (cur["val_loss"] > prev["val_loss"]
                                                       and cur["train_loss"] < prev["train_loss"]):
            break
        n += 1
    return n


def overfit_flag(history: list[dict], best: int | None = None) -> dict:
    """{"flag", "gap", "note"}: gap = train - validation accuracy at the best epoch (``best``, an
    epoch number, or the best validation accuracy in the history)."""
    if not history:
        return {"flag": False, "gap": 0.0, "note": "no training history (metrics.jsonl) to judge from"}
    chosen = next((h for h in history if h.get("epoch") == best), None) if best is not None else None
    chosen = chosen or best_epoch(history)
    train_acc, val_acc = chosen.get("train_accuracy"), chosen.get("val_accuracy")
    gap = train_acc - val_acc if _finite(train_acc) and _finite(val_acc) else 0.0
    rising = rising_val_loss(history)
    reasons = []
    if gap > GAP:
        reasons.append(f"at the best epoch ({chosen.get('epoch')}) train accuracy {train_acc:.3f} exceeds "
                       f"validation accuracy {val_acc:.3f} by {gap:.3f} (> {GAP})")
    first, last = history[-1 - rising], history[-1]
    if rising >= RISING and last["val_loss"] >= first["val_loss"] * (1 + MIN_RISE):
        reasons.append(f"validation loss rose for the last {rising} epochs ({first['val_loss']:.3g} → "
                       f"{last['val_loss']:.3g}) while train loss fell ({first['train_loss']:.3g} → "
                       f"{last['train_loss']:.3g})")
    if reasons:
        note = "Overfitting: " + "; and ".join(reasons) + "."
    elif _finite(train_acc) and _finite(val_acc):
        note = (f"No sign of overfitting: at the best epoch ({chosen.get('epoch')}) train accuracy {train_acc:.3f} "
                f"vs validation {val_acc:.3f} (gap {gap:.3f} <= {GAP}), and validation loss did not rise by "
                f"{MIN_RISE:.0%} or more over {RISING}+ final epochs while train loss fell.")
    else:
        note = "No accuracy to compare at the best epoch (empty validation split?); validation loss did not rise."
    return {"flag": bool(reasons), "gap": round(float(gap), 4), "note": note}
