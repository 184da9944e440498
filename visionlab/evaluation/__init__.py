"""Evaluation: the model runs over the test set once; metrics and figures are computed from
the saved predictions record.

The names below load their module on first use (PEP 562): ``visionlab.evaluation.painter`` must
be importable without torch, since the painter process is started before torch is imported.
"""
import importlib

_HOME = {"evaluate_run": "evaluate", "load_run": "evaluate", "predict_images": "evaluate", "reevaluate": "evaluate",
         "classification_metrics": "metrics", "top_confusions": "metrics", "load_record": "record",
         "Painter": "painter"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
