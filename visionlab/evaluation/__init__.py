"""Evaluation: the model runs over the test set once; metrics and figures are computed from
the saved predictions record."""
from .evaluate import evaluate_run, load_run, predict_images, reevaluate
from .metrics import classification_metrics, top_confusions
from .record import load_record

__all__ = ["classification_metrics", "evaluate_run", "load_record", "load_run", "predict_images", "reevaluate",
           "top_confusions"]
