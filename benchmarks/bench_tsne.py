"""t-SNE benchmark: visionlab's 2-D + 3-D embedding (openTSNE, shared affinities) of 10,000 real
feature vectors, against scikit-learn's Barnes-Hut TSNE on the same input.

usage: python benchmarks/bench_tsne.py [--run RUN_DIR] [--archive ARCHIVE] [--points 10000] [--runs 3]
Features: RUN_DIR/predictions.npz when given (a trained run's penultimate test features), else the
raw pixels of the MNIST test images in ../shared/data/mnist-png.tar.gz (784-D; PCA to 50 is part
of the timed pipeline). visionlab: median of --runs. scikit-learn (slow): once each, 2-D at
--points and 3-D at half of them. Quality, the same yardstick for every embedding: the exact KL
divergence to one set of perplexity-30 affinities of the 50-D input (lower is better), and the
5-fold 10-NN accuracy against the true labels (near the input's own: neighbourhoods survived).
Writes benchmarks/results/tsne.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, save_results  # noqa: E402

sys.path.insert(0, str(ROOT))
from visionlab.analysis import TSNEConfig, embed_tsne, stratified_subsample  # noqa: E402


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


def affinities(x50: np.ndarray):
    """Sparse symmetric P (n, n) of the input, as openTSNE computes it for the embeddings."""
    from openTSNE.affinity import PerplexityBasedNN

    return PerplexityBasedNN(x50, perplexity=30, n_jobs=-1, random_state=0).P.tocoo()


def exact_kl(embedding: np.ndarray, P) -> float:
    """KL(P || Q) with Q the exact Student-t similarities of all n^2 pairs, 1,000 rows at a time."""
    y = np.asarray(embedding, np.float64)
    sq = (y ** 2).sum(axis=1)
    z = 0.0  # sum over i != j of 1 / (1 + |y_i - y_j|^2)
    for s in range(0, len(y), 1000):
        q = 1 / (1 + np.maximum(sq[s:s + 1000, None] + sq[None] - 2 * y[s:s + 1000] @ y.T, 0))
        q[np.arange(len(q)), np.arange(s, s + len(q))] = 0
        z += q.sum()
    d2 = ((y[P.row] - y[P.col]) ** 2).sum(axis=1)
    return float((P.data * (np.log(P.data) + np.log1p(d2))).sum() + np.log(z))


def timed(fn, *args):
    """fn(*args), wall seconds, CPU seconds of all threads, and the 1-minute load average after:
    the machine may be shared, and a load above the core count means the wall time is inflated."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu, os.getloadavg()[0]


def bench_visionlab(features, labels, P, runs: int) -> dict:
    timings = [timed(embed_tsne, features, TSNEConfig(random_state=0)) for _ in range(runs)]
    results = [t[0] for t in timings]
    median = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
    return {"seconds": [round(r.seconds, 2) for r in results], "median_seconds": round(median.seconds, 2),
            "cpu_seconds": [round(t[2], 2) for t in timings], "load_after": [round(t[3], 2) for t in timings],
            "timings_of_median": median.timings,
            "exact_kl_2d": round(exact_kl(median.embedding_2d, P), 4),
            "exact_kl_3d": round(exact_kl(median.embedding_3d, P), 4),
            "knn_accuracy_2d": round(knn_accuracy(median.embedding_2d, labels), 4),
            "knn_accuracy_3d": round(knn_accuracy(median.embedding_3d, labels), 4)}


def bench_sklearn(x50: np.ndarray, labels: np.ndarray, P, dims: int) -> dict:
    from sklearn.manifold import TSNE

    embedding, wall, cpu, load = timed(TSNE(dims, init="pca", random_state=0, n_jobs=-1).fit_transform, x50)
    return {"n": len(x50), "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "load_after": round(load, 2),
            "exact_kl": round(exact_kl(embedding, P), 4), "knn_accuracy": round(knn_accuracy(embedding, labels), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run folder (uses its predictions.npz features)")
    parser.add_argument("--archive", type=Path, default=DATA / "mnist-png.tar.gz")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    features, labels, source = load_features(args.run, args.archive, args.points)
    n = len(labels)
    x50 = PCA(min(50, features.shape[1]), random_state=0).fit_transform(features.astype(np.float64))
    small = stratified_subsample(labels, n // 2, seed=0)
    P, P_small = affinities(x50), affinities(x50[small])
    result = {"source": source, "n": n, "cpu_count": os.cpu_count(), "machine": platform.processor() or
              platform.machine(), "input_knn_accuracy_50d": round(knn_accuracy(x50, labels), 4),
              "visionlab_2d_3d": bench_visionlab(features, labels, P, args.runs),
              "visionlab_2d_3d_half": bench_visionlab(features[small], labels[small], P_small, 1)}
    if not args.skip_sklearn:
        result["sklearn_2d"] = bench_sklearn(x50, labels, P, 2)
        result["sklearn_3d_half"] = bench_sklearn(x50[small], labels[small], P_small, 3)
    save_results("tsne", result)

    v, h = result["visionlab_2d_3d"], result["visionlab_2d_3d_half"]
    pair = lambda a, b: f"{a:.3f} / {b:.3f}"  # noqa: E731
    rows = [("visionlab (openTSNE) 2-D + 3-D", f"{n:,}", f"{v['median_seconds']:.1f} (median of {args.runs})",
             pair(v["exact_kl_2d"], v["exact_kl_3d"]), pair(v["knn_accuracy_2d"], v["knn_accuracy_3d"])),
            ("visionlab (openTSNE) 2-D + 3-D", f"{len(small):,}", f"{h['median_seconds']:.1f} (1 run)",
             pair(h["exact_kl_2d"], h["exact_kl_3d"]), pair(h["knn_accuracy_2d"], h["knn_accuracy_3d"]))]
    if "sklearn_2d" in result:
        s2, s3 = result["sklearn_2d"], result["sklearn_3d_half"]
        rows += [("scikit-learn TSNE 2-D only", f"{s2['n']:,}", f"{s2['seconds']:.1f} (1 run)",
                  f"{s2['exact_kl']:.3f} / -", f"{s2['knn_accuracy']:.3f} / -"),
                 ("scikit-learn TSNE 3-D only", f"{s3['n']:,}", f"{s3['seconds']:.1f} (1 run)",
                  f"- / {s3['exact_kl']:.3f}", f"- / {s3['knn_accuracy']:.3f}")]
    print(f"{source}, {os.cpu_count()} CPU cores; 10-NN accuracy of the 50-D input: "
          f"{result['input_knn_accuracy_50d']:.3f}\n")
    print("| method | points | seconds | exact KL 2-D / 3-D | 10-NN accuracy 2-D / 3-D |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print(f"\nvisionlab steps (median run): {v['timings_of_median']}; CPU seconds per run {v['cpu_seconds']}, "
          f"1-minute load after each run {v['load_after']} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
