"""The hand-written metrics agree with scikit-learn's on random predictions, missing classes included."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, top_k_accuracy_score

from visionlab.evaluation import classification_metrics


@pytest.mark.parametrize("n_classes,missing", [(3, None), (10, None), (10, 4), (2, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_scikit_learn(n_classes, missing, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, 500)
    if missing is not None:  # a class the test set lacks, but the model still predicts
        labels[labels == missing] = (missing + 1) % n_classes
    logits = rng.normal(size=(500, n_classes)) + 1.5 * np.eye(n_classes)[labels] * rng.random((500, 1))
    classes = [f"c{i}" for i in range(n_classes)]
    ids = list(range(n_classes))
    preds = logits.argmax(1)
    got = classification_metrics(logits, labels, classes)

    assert got["test_accuracy"] == pytest.approx(accuracy_score(labels, preds))
    for average in ("macro", "weighted"):
        assert got[f"test_{average}_f1"] == pytest.approx(
            f1_score(labels, preds, labels=ids, average=average, zero_division=0))
    report = classification_report(labels, preds, labels=ids, target_names=classes, output_dict=True, zero_division=0)
    for c in classes:
        for key in ("precision", "recall", "f1-score", "support"):
            assert got["per_class"][c][key] == pytest.approx(report[c][key]), (c, key)
    assert got["confusion_matrix"] == confusion_matrix(labels, preds, labels=ids).tolist()
    if n_classes > 2:
        k = got["top_k"]
        assert got["test_top_k_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=k, labels=ids))
    else:
        assert got["test_top_k_accuracy"] is None


def test_figures_draw_class_names_that_look_like_mathtext(tmp_path):
    """'$' in a class or run name is drawn as written; unescaped, matplotlib fails to parse it."""
    from visionlab.evaluation.evaluate import queue_figures
    from visionlab.evaluation.painter import Painter

    classes = [r"$\frac$", "$x^$", "US$"]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    record = {"logits": rng.normal(size=(40, 3)).astype(np.float32), "labels": labels, "indices": np.arange(40)}
    images = rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8)
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_accuracy": 0.5, "val_accuracy": 0.4}]
    painter = Painter(None)  # drawn here
    confusion = classification_metrics(record["logits"], record["labels"], classes)["confusion_matrix"]
    figures = queue_figures(painter, tmp_path, record["logits"], record["labels"], record["indices"], confusion,
                            images, classes, history, "run $x^$", seed=0)
    painter.results()
    assert set(figures) == {"confusion_matrix", "curves", "predictions"}
    for name in figures.values():
        assert (tmp_path / name).stat().st_size > 1000


def test_figure_titles_tell_augmented_runs_apart():
    from visionlab.evaluation.evaluate import figure_title
    from visionlab.training.config import TrainConfig

    assert figure_title(TrainConfig(model="cnn")) == "cnn"
    assert figure_title(TrainConfig(model="cnn", augment="standard")) == "cnn + standard aug"
    assert figure_title(TrainConfig(model="resnet18", augment=["crop:4", "flip"])) == "resnet18 + crop:4, flip aug"


def test_write_predictions_hands_over_the_test_logits_before_the_record(tmp_path):
    """on_test (where a GPU run queues its figures, for the painter to draw during the train pass)
    gets the test logits and labels that the record then holds, before predictions.npz exists."""
    import torch

    from visionlab.evaluation.evaluate import write_predictions
    from visionlab.models import build_model
    from visionlab.models.base import ModelOptions
    from visionlab.training.loop import Engine, autocast_for

    cpu = torch.device("cpu")
    model = build_model("mlp", 3, 1, (8, 8), ModelOptions()).eval()
    engine = Engine(cpu, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), autocast_for(cpu, "fp32"), False)
    rng = np.random.default_rng(0)
    test_images, test_labels = rng.integers(0, 255, (20, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, 20)
    train_images, train_labels = rng.integers(0, 255, (30, 8, 8, 1), dtype=np.uint8), np.arange(30) % 3
    seen = []
    record = write_predictions(tmp_path, model, engine, test_images, test_labels, train_images, train_labels, 3, 8, 0,
                               on_test=lambda *a: seen.append((*a, (tmp_path / "predictions.npz").exists())))
    [(logits, labels, written)] = seen
    assert not written and (tmp_path / "predictions.npz").exists()
    np.testing.assert_array_equal(logits, record["logits"])
    np.testing.assert_array_equal(labels, record["labels"])


def test_class_centroids_are_each_class_mean_and_nan_for_an_empty_class():
    from visionlab.evaluation.record import class_centroids

    rng = np.random.default_rng(0)
    features = rng.standard_normal((500, 7)).astype(np.float32) * 100
    labels = rng.choice([0, 1, 3], size=500)  # class 2 has no image
    centroids, counts = class_centroids(features, labels, 4)
    assert centroids.dtype == np.float32 and counts.tolist() == [np.sum(labels == k) for k in range(4)]
    for k in (0, 1, 3):
        np.testing.assert_allclose(centroids[k], features[labels == k].astype(np.float64).mean(0), rtol=1e-6)
    assert np.isnan(centroids[2]).all()
