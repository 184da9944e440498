"""Analysis contracts: centroid distances against hand-computed values, stratified t-SNE samples,
t-SNE that separates separable clusters in 2-D and 3-D, the plotly figure, class names passed as
data, analysis.json caching, the overfit flag, and feature maps for conv models only."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import visionlab.analysis.run as analysis_run
from visionlab.analysis import TSNEConfig, analyze_run, embed_tsne, find_mistakes, overfit_flag, stratified_subsample
from visionlab.analysis import summarize
from visionlab.analysis.feature_maps import choose_per_class
from visionlab.analysis.tsne import class_colors, plot_tsne, plotly_tsne_3d
from visionlab.evaluation.record import save_record

HTML = "<img src=x onerror=alert(1)>"


def logits_for(preds, confidence, n_classes):
    """Logits whose argmax is preds with softmax probability `confidence` on it."""
    preds, confidence = np.asarray(preds), np.asarray(confidence, np.float64)
    other = (1 - confidence) / (n_classes - 1)
    logits = np.tile(np.log(other)[:, None], (1, n_classes))
    logits[np.arange(len(preds)), preds] = np.log(confidence)
    return logits.astype(np.float32)


def hand_record():
    """2-D features, centroids (0, 0), (10, 0), (0, 10); 4 errors with known distances:

    row 0: true 0 pred 1 at (8, 0)  -> dist_true 8, dist_pred 2 (closer to predicted), ratio 4
    row 1: true 0 pred 1 at (9, 0)  -> 9 vs 1, ratio 9
    row 2: true 1 pred 0 at (6, 0)  -> 4 vs 6 (closer to its own class), ratio 2/3
    row 3: true 2 pred 0 at (0, 3)  -> 7 vs 3, ratio 7/3
    rows 4-6: correct.
    """
    features = np.array([[8, 0], [9, 0], [6, 0], [0, 3], [0, 0], [10, 0], [0, 10]], np.float32)
    labels = np.array([0, 0, 1, 2, 0, 1, 2])
    preds = np.array([1, 1, 0, 0, 0, 1, 2])
    confidence = [0.6, 0.9, 0.7, 0.8, 0.99, 0.99, 0.99]
    return {"logits": logits_for(preds, confidence, 3), "labels": labels, "features": features,
            "indices": np.arange(100, 107), "train_centroids": np.array([[0, 0], [10, 0], [0, 10]], np.float32),
            "train_counts": np.array([5, 5, 5])}


def test_centroid_distances_match_hand_computed_values():
    record = hand_record()
    mistakes = find_mistakes(record)
    assert mistakes.rows.tolist() == [1, 3, 2, 0]  # most confident first: 0.9, 0.8, 0.7, 0.6
    np.testing.assert_allclose(mistakes.dist_true, [9, 7, 4, 8], rtol=1e-6)
    np.testing.assert_allclose(mistakes.dist_pred, [1, 3, 6, 2], rtol=1e-6)
    summary = summarize(mistakes, record, ["zero", "one", HTML], names=[f"f{i}.png" for i in range(107)])
    assert summary["n_errors"] == 4 and summary["n_without_centroid"] == 0
    assert summary["closer_to_predicted_fraction"] == 0.75
    assert summary["mean_distance_ratio"] == pytest.approx((4 + 9 + 2 / 3 + 7 / 3) / 4, abs=1e-4)
    assert summary["median_distance_ratio"] == pytest.approx((7 / 3 + 4) / 2, abs=1e-4)
    assert summary["top_confusions"][0] == {"true": "zero", "predicted": "one", "count": 2}
    assert {(c["true"], c["predicted"], c["count"]) for c in summary["top_confusions"][1:]} == {
        ("one", "zero", 1), (HTML, "zero", 1)}
    first = summary["most_confident"][0]
    assert first == {"index": 101, "true": "zero", "predicted": "one", "confidence": 0.9, "dist_true": 9.0,
                     "dist_pred": 1.0, "name": "f101.png"}
    assert summary["most_confident"][1]["true"] == HTML  # names go through as data, unchanged


def test_class_without_train_centroid_is_left_out_not_nan():
    record = hand_record()
    record["train_centroids"][2] = np.nan  # class 2 had no train images
    summary = summarize(find_mistakes(record), record, ["a", "b", "c"])
    assert summary["n_errors"] == 4 and summary["n_without_centroid"] == 1
    assert summary["closer_to_predicted_fraction"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["most_confident"][1]["dist_true"] is None
    json.dumps(summary, allow_nan=False)  # valid strict JSON


def test_stratified_subsample_is_proportional_capped_and_seeded():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    rows = stratified_subsample(labels, 100, seed=3)
    assert len(rows) == 100 and len(np.unique(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [60, 30, 10]
    assert np.array_equal(rows, stratified_subsample(labels, 100, seed=3))
    assert not np.array_equal(rows, stratified_subsample(labels, 100, seed=4))
    assert np.bincount(labels[stratified_subsample(labels, 101, 0)]).sum() == 101
    assert np.array_equal(stratified_subsample(labels, 5000, 0), np.arange(1000))


def blobs(n_per_class=100, dims=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (3, dims))
    labels = np.repeat(np.arange(3), n_per_class)
    return (centres[labels] + rng.normal(0, 1, (len(labels), dims))).astype(np.float32), labels


@pytest.mark.parametrize("n_per_class", [100, 400])  # 300 points: Barnes-Hut in 2-D; 1,200: FFT
def test_tsne_separates_separable_clusters_in_2d_and_3d(n_per_class):
    features, labels = blobs(n_per_class)
    n = len(labels)
    result = embed_tsne(features, TSNEConfig(random_state=0, exaggeration_iter=100, iter_2d=200, iter_3d=200))
    assert result.embedding_2d.shape == (n, 2) and result.embedding_3d.shape == (n, 3)
    assert result.pca_dims == 20 and np.isfinite([result.kl_2d, result.kl_3d]).all()
    for embedding in (result.embedding_2d, result.embedding_3d):
        accuracy = cross_val_score(KNeighborsClassifier(5), embedding, labels, cv=5).mean()
        assert accuracy > 0.95
    again = embed_tsne(features, TSNEConfig(random_state=0, exaggeration_iter=100, iter_2d=200, iter_3d=200))
    np.testing.assert_allclose(again.embedding_2d, result.embedding_2d, atol=1e-4)  # seeded


def test_plotly_figure_has_a_trace_per_class_and_one_for_errors():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    preds = labels.copy()
    preds[[0, 15]] = [1, 2]
    classes = ["a", "b & c", HTML]
    text = plotly_tsne_3d(rng.normal(size=(30, 3)), labels, preds, np.arange(30) + 500, classes, "t")
    assert "<img" not in text  # '<' is escaped, so the JSON is safe inside a <script> tag
    figure = json.loads(text)
    traces = figure["data"]
    assert [t["name"] for t in traces[:3]] == classes and len(traces) == 4
    assert all(t["type"] == "scatter3d" for t in traces)
    assert [len(t["x"]) for t in traces] == [10, 10, 10, 2]
    assert traces[2]["text"][0] == f"{HTML} (test #520)"
    assert traces[3]["text"][0] == "test #500: true a, predicted b & c"


@pytest.mark.parametrize("n_classes", [3, 10, 20, 45])
def test_class_colours_are_distinct(n_classes):
    assert len(set(class_colors(n_classes))) == n_classes


def test_class_names_are_never_matplotlib_math(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    classes = [r"$\frac$", "$x^$", HTML]  # as mathtext, the first two fail to parse
    path = plot_tsne(rng.normal(size=(30, 2)), labels, labels == 0, classes, tmp_path / "t.png", "t")
    Image.open(path).verify()


def test_feature_map_images_cover_classes_first():
    labels = np.repeat([0, 1, 2, 3], [50, 5, 5, 1])
    rows = choose_per_class(np.arange(len(labels)), labels, 3, seed=0)
    assert len(rows) == 3 and len(set(labels[rows])) == 3
    rows = choose_per_class(np.arange(len(labels)), labels, 6, seed=0)
    assert len(set(rows)) == 6 and set(labels[rows]) == {0, 1, 2, 3}
    assert choose_per_class(np.array([], np.int64), labels, 4, seed=0).size == 0


def synthetic_run(tmp_path, n_per_class=30, errors=True, classes=("zero", "one", HTML)):
    """A run folder with only predictions.npz and metrics.jsonl: no model, so no feature maps."""
    run = tmp_path / "run"
    run.mkdir()
    features, labels = blobs(n_per_class, dims=64)
    k = len(classes)
    preds = labels.copy()
    if errors:
        preds[::7] = (labels[::7] + 1) % k
    centroids = np.stack([features[labels == c].mean(0) for c in range(k)])
    save_record(run / "predictions.npz", logits=logits_for(preds, np.full(len(labels), 0.8), k), labels=labels,
                features=features, indices=np.arange(len(labels)), train_centroids=centroids,
                train_counts=np.full(k, n_per_class))
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.9, "val_accuracy": 0.88}
               for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    images = np.random.default_rng(1).integers(0, 256, (len(labels), 8, 8, 1), dtype=np.uint8)
    return run, images, list(classes)


def test_analyze_run_writes_figures_and_caches(tmp_path, monkeypatch):
    run, images, classes = synthetic_run(tmp_path)
    result = analyze_run(run, images, classes, names=[f"img{i}.png" for i in range(len(images))],
                         tsne_max_points=60)
    assert result["tsne"]["n_points"] == 60 and result["tsne"]["subsampled"] is True
    assert result["misclassification"]["n_errors"] == 13
    assert result["misclassification"]["most_confident"][0]["name"].startswith("img")
    assert result["overfit"] == {"flag": False, "gap": 0.02, "note": result["overfit"]["note"]}
    assert set(result["figures"]) == {"tsne_2d", "tsne_3d", "tsne_3d_plotly", "distance_ratio", "confident_mistakes"}
    for path in result["figures"].values():
        assert path.startswith("analysis/") and (run / path).stat().st_size > 1000
    for key in ("tsne_2d", "tsne_3d", "distance_ratio", "confident_mistakes"):
        Image.open(run / result["figures"][key]).verify()
    plotly = json.loads((run / result["figures"]["tsne_3d_plotly"]).read_text())
    assert [t["name"] for t in plotly["data"][:3]] == classes and len(plotly["data"]) == 4
    saved = json.loads((run / "analysis" / "analysis.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"{c} in analysis.json"))
    assert saved == result
    assert any(c["true"] == HTML or c["predicted"] == HTML for c in saved["misclassification"]["top_confusions"])

    def boom(*args, **kwargs):
        raise AssertionError("t-SNE recomputed")

    monkeypatch.setattr(analysis_run, "embed_tsne", boom)
    assert analyze_run(run, images, classes, names=[f"img{i}.png" for i in range(len(images))],
                       tsne_max_points=60) == result
    newer = (run / "analysis" / "analysis.json").stat().st_mtime + 10
    os.utime(run / "predictions.npz", (newer, newer))  # a re-evaluated run: the analysis is stale
    with pytest.raises(AssertionError, match="recomputed"):
        analyze_run(run, images, classes, tsne_max_points=60)


def test_no_errors_gives_zeros_and_no_gallery(tmp_path):
    run, images, classes = synthetic_run(tmp_path, n_per_class=10, errors=False)
    result = analyze_run(run, images, classes)
    misc = result["misclassification"]
    assert (misc["n_errors"], misc["closer_to_predicted_fraction"], misc["mean_distance_ratio"]) == (0, 0.0, 0.0)
    assert misc["top_confusions"] == [] and misc["most_confident"] == []
    assert "confident_mistakes" not in result["figures"] and result["tsne"]["subsampled"] is False


def history(train_acc, val_acc, train_loss, val_loss):
    return [{"epoch": i + 1, "train_accuracy": a, "val_accuracy": b, "train_loss": c, "val_loss": d}
            for i, (a, b, c, d) in enumerate(zip(train_acc, val_acc, train_loss, val_loss))]


def test_overfit_flag_on_synthetic_histories():
    healthy = history([0.8, 0.9, 0.95], [0.8, 0.9, 0.93], [0.6, 0.3, 0.2], [0.6, 0.35, 0.25])
    assert overfit_flag(healthy)["flag"] is False and overfit_flag(healthy)["gap"] == 0.02
    gap = history([0.8, 0.95, 0.99], [0.8, 0.9, 0.92], [0.6, 0.3, 0.1], [0.6, 0.35, 0.3])
    flag = overfit_flag(gap)
    assert flag["flag"] is True and flag["gap"] == 0.07 and "exceeds" in flag["note"]
    rising = history([0.8, 0.9, 0.91, 0.92], [0.8, 0.9, 0.9, 0.89], [0.6, 0.3, 0.2, 0.1], [0.5, 0.3, 0.35, 0.4])
    flag = overfit_flag(rising)
    assert flag["flag"] is True and "rose for the last 2 epochs" in flag["note"] and flag["gap"] == 0.0
    once = history([0.8, 0.9, 0.91], [0.8, 0.9, 0.9], [0.6, 0.3, 0.2], [0.5, 0.3, 0.35])
    assert overfit_flag(once)["flag"] is False  # one rising epoch is noise
    both_rise = history([0.8, 0.9, 0.91, 0.92], [0.8, 0.9, 0.9, 0.9], [0.6, 0.3, 0.4, 0.5], [0.5, 0.3, 0.35, 0.4])
    assert overfit_flag(both_rise)["flag"] is False  # train loss rose too: not overfitting
    wobble = history([0.9, 0.99, 0.99, 0.99], [0.98, 0.98, 0.98, 0.98], [0.3, 0.0030, 0.0028, 0.0027],
                     [0.07, 0.0675, 0.0679, 0.0683])
    assert overfit_flag(wobble)["flag"] is False  # rising in the fourth decimal: under MIN_RISE, not a trend
    # the gap is read at the best epoch, whose weights were kept, not the last
    late = history([0.9, 0.99], [0.92, 0.85], [0.3, 0.1], [0.3, 0.3])
    assert overfit_flag(late) == {**overfit_flag(late), "flag": False, "gap": -0.02}
    assert overfit_flag(late, best=2)["flag"] is True
    assert overfit_flag([])["flag"] is False


def tiny_run(tmp_path, model):
    from visionlab.data import DataConfig, load_dataset
    from visionlab.training import make_config, train

    train(make_config({"data": "digits", "model": model, "epochs": 1, "device": "cpu", "precision": "fp32",
                       "out": str(tmp_path / model)}))
    return tmp_path / model, load_dataset(DataConfig(source="digits", seed=0))


def test_feature_maps_for_cnn2(tmp_path):
    run, ds = tiny_run(tmp_path, "cnn2")
    result = analyze_run(run, ds.test.images, ds.classes, names=ds.names("test"), feature_map_images=3)
    assert "feature_maps" in result["figures"]
    assert ("feature_maps_errors" in result["figures"]) == (result["misclassification"]["n_errors"] > 0)
    for key in ("feature_maps", "feature_maps_errors"):
        if key in result["figures"]:
            with Image.open(run / result["figures"][key]) as png:
                assert png.size[0] > 500 and png.size[1] > 500


def test_no_feature_maps_for_mlp(tmp_path):
    run, ds = tiny_run(tmp_path, "mlp")
    result = analyze_run(run, ds.test.images, ds.classes, feature_map_images=3)
    assert not {"feature_maps", "feature_maps_errors"} & set(result["figures"])
    assert {"tsne_2d", "tsne_3d", "distance_ratio"} <= set(result["figures"])


def test_feature_map_tiles_scale_single_pixels_together_and_larger_maps_each_to_its_own_range():
    from visionlab.analysis.feature_maps import _tiles

    tiles, channels, joint = _tiles(np.array([1.0, 3.0, 2.0]).reshape(3, 1, 1))  # a 1x1 map has no range of its own
    assert joint and channels == [1, 2, 0] and [t.item() for t in tiles] == [1.0, 0.5, 0.0]
    ramp = np.arange(4.0).reshape(2, 2)
    tiles, channels, joint = _tiles(np.stack([ramp, 10 * ramp, np.zeros((2, 2))]))
    assert not joint and channels == [1, 0, 2]
    assert all(np.allclose(t, ramp / 3) for t in tiles[:2]) and not tiles[2].any()  # a flat map is drawn at 0
