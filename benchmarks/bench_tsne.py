"""t-SNE benchmark: visionlab's 2-D + 3-D embedding (openTSNE, shared affinities) of 10,000 real
feature vectors, against scikit-learn's Barnes-Hut TSNE on the same input.

usage: python benchmarks/bench_tsne.py [--run RUN_DIR] [--archive ARCHIVE] [--points 10000] [--runs 3]
Features: RUN_DIR/predictions.npz when given (a trained run's penultimate test features), else the
raw pixels of the MNIST test images in ../shared/data/mnist-png.tar.gz (784-D; PCA to 50 is part
of the timed pipeline). visionlab: median of --runs. scikit-learn (slow): once each, 2-D at
--points and 3-D at half of them. Quality: 5-fold 10-NN accuracy of the embedding against the
true labels (near the 50-D input's own kNN accuracy means the neighbourhoods survived).
Writes benchmarks/results/tsne.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from visionlab.analysis import TSNEConfig, embed_tsne, stratified_subsample  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def load_features(run: Path | None, archive: Path, points: int) -> tuple[np.ndarray, np.ndarray, str]:
    if run is not None:
        from visionlab.evaluation import load_record

        record = load_record(run / "predictions.npz")
        features, labels, source = record["features"], record["labels"], f"{run} penultimate features"
    else:
        from visionlab.data import DataConfig, load_dataset

        ds = load_dataset(DataConfig(source=str(archive)))
        features = np.asarray(ds.test.images).reshape(len(ds.test.labels), -1).astype(np.float32) / 255
        labels, source = np.asarray(ds.test.labels), f"{archive.name} test pixels"
    rows = stratified_subsample(labels, points, seed=0)
    return features[rows], labels[rows], f"{source} ({features.shape[1]}-D)"


def knn_accuracy(embedding: np.ndarray, labels: np.ndarray) -> float:
    return float(cross_val_score(KNeighborsClassifier(10), embedding, labels, cv=5).mean())


def bench_visionlab(features, labels, runs: int) -> dict:
    results = [embed_tsne(features, TSNEConfig(random_state=0)) for _ in range(runs)]
    median = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
    return {"seconds": [round(r.seconds, 2) for r in results], "median_seconds": round(median.seconds, 2),
            "timings_of_median": median.timings, "kl_2d": round(median.kl_2d, 4), "kl_3d": round(median.kl_3d, 4),
            "knn_accuracy_2d": round(knn_accuracy(median.embedding_2d, labels), 4),
            "knn_accuracy_3d": round(knn_accuracy(median.embedding_3d, labels), 4)}


def bench_sklearn(x50: np.ndarray, labels: np.ndarray, dims: int) -> dict:
    from sklearn.manifold import TSNE

    start = time.perf_counter()
    tsne = TSNE(dims, init="pca", random_state=0, n_jobs=-1)
    embedding = tsne.fit_transform(x50)
    return {"n": len(x50), "seconds": round(time.perf_counter() - start, 2), "kl": round(float(tsne.kl_divergence_), 4),
            "knn_accuracy": round(knn_accuracy(embedding, labels), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run folder (uses its predictions.npz features)")
    parser.add_argument("--archive", type=Path, default=SHARED / "mnist-png.tar.gz")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    features, labels, source = load_features(args.run, args.archive, args.points)
    n = len(labels)
    x50 = PCA(min(50, features.shape[1]), random_state=0).fit_transform(features.astype(np.float64))
    result = {"source": source, "n": n, "cpu_count": os.cpu_count(), "machine": platform.processor() or
              platform.machine(), "input_knn_accuracy_50d": round(knn_accuracy(x50, labels), 4),
              "visionlab_2d_3d": bench_visionlab(features, labels, args.runs)}
    small = stratified_subsample(labels, n // 2, seed=0)
    result["visionlab_2d_3d_half"] = bench_visionlab(features[small], labels[small], 1)
    if not args.skip_sklearn:
        result["sklearn_2d"] = bench_sklearn(x50, labels, 2)
        result["sklearn_3d_half"] = bench_sklearn(x50[small], labels[small], 3)
    out = ROOT / "benchmarks" / "results" / "tsne.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

    v, h = result["visionlab_2d_3d"], result["visionlab_2d_3d_half"]
    rows = [("visionlab (openTSNE) 2-D + 3-D", n, f"{v['median_seconds']:.1f} (median of {args.runs})",
             f"{v['knn_accuracy_2d']:.3f} / {v['knn_accuracy_3d']:.3f}"),
            ("visionlab (openTSNE) 2-D + 3-D", len(small), f"{h['median_seconds']:.1f} (1 run)",
             f"{h['knn_accuracy_2d']:.3f} / {h['knn_accuracy_3d']:.3f}")]
    if "sklearn_2d" in result:
        s2, s3 = result["sklearn_2d"], result["sklearn_3d_half"]
        rows += [("scikit-learn TSNE 2-D only", s2["n"], f"{s2['seconds']:.1f} (1 run)",
                  f"{s2['knn_accuracy']:.3f} / -"),
                 ("scikit-learn TSNE 3-D only", s3["n"], f"{s3['seconds']:.1f} (1 run)",
                  f"- / {s3['knn_accuracy']:.3f}")]
    print(f"{source}, {os.cpu_count()} CPU cores; 10-NN accuracy of the 50-D input: "
          f"{result['input_knn_accuracy_50d']:.3f}\n")
    print("| method | points | seconds | 10-NN accuracy 2-D / 3-D |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print(f"\nvisionlab steps (median run): {v['timings_of_median']}")


if __name__ == "__main__":
    main()
