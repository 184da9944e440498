"""``run_study``: data summary (and EDA), every experiment, analysis, comparison, report.

    DIR/
      summary.json  summary.md  report.html
      comparison/   accuracy.png  confusion_matrices.png
      experiments/<name>/   one training run folder each (see visionlab.training.run)
                  analysis/ t-SNE, centroid distances, feature maps

Resumable: run the same command again after a kill and finished experiments are kept, the
interrupted one resumes from its last checkpoint, and nothing that exists is recomputed.
With ``workers`` > 1 the experiments run in worker processes (see parallel.py) and the outputs
are the same.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import time
from pathlib import Path

import yaml

from ..errors import UserError
from .config import StudyConfig, experiment_config
from ..files import write_text

log = logging.getLogger(__name__)


def default_out(study: StudyConfig, quick: bool) -> Path:
    """Deterministic, so that running the same command again resumes the same study."""
    data = Path(study.data.source).name.split(".")[0] or "data"
    name = study.name if study.name == data or data in study.name else f"{study.name}-{data}"
    return Path("runs") / (name + ("-quick" if quick else ""))


def _stage(i: int, n: int, text: str) -> None:
    log.info("[%d/%d] %s", i, n, text)


def _train_experiment(study, experiment, out: Path, quick: bool, where: str) -> dict:
    """Train (or resume, or reuse) one experiment; its metrics.json record."""
    from ..training import train

    config = experiment_config(study, experiment, out, quick, where)
    run_dir = Path(config.out)
    if (run_dir / "metrics.json").exists():
        _same_config(run_dir, config, experiment.name)
        return json.loads((run_dir / "metrics.json").read_text())
    resume = (run_dir / "checkpoint.safetensors").exists()
    if resume:
        _same_config(run_dir, config, experiment.name)
        log.info("%s: resuming from its last checkpoint", experiment.name)
    elif run_dir.exists() and any(run_dir.iterdir()):
        # a folder from a run killed before its first checkpoint: nothing in it to keep
        for name in ("config.yaml", "run.json", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    return train(config, resume=resume)


def _same_config(run_dir: Path, config, name: str) -> None:
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    info = run_dir / "run.json"
    if info.exists():  # a run records the numbers its "auto" settings (batch_size, lr) resolved to
        config, recorded = config.model_copy(), json.loads(info.read_text())
        config.resolve_auto(recorded["train_images"], recorded["image_shape"][0] * recorded["image_shape"][1])
    now = config.model_dump()
    defaults = type(config)().model_dump()  # a key added since that run was saved has its default
    changed = sorted(k for k in now if saved.get(k, defaults[k]) != now[k] and k != "out")
    if changed:
        raise UserError(f"experiment '{name}' in {run_dir} was run with other settings ({', '.join(changed)}); "
                        "delete that folder to rerun it, or use another --out")


def load_study_data(study: StudyConfig):
    """The study's dataset (decoded once, then read from the cache by every process)."""
    from ..data import DataConfig, load_dataset

    return load_dataset(DataConfig(source=study.data.source, seed=study.seed,
                                   **{k: getattr(study.data, k) for k in
                                      ("image_size", "channels", "val_fraction", "test_fraction", "classes",
                                       "strict", "merge_splits")}))


def run_experiment(study: StudyConfig, experiment, dataset, out: Path, quick: bool, where: str) -> tuple[dict, dict]:
    """Train (or resume, or reuse) one experiment, then analyse it: (metrics, analysis)."""
    metrics = _train_experiment(study, experiment, out, quick, where)
    return metrics, _analyze(out / "experiments" / experiment.name, dataset, study, quick)


def experiment_stage(study: StudyConfig, index: int, n_stages: int) -> None:
    """The stage line of experiment ``index`` (0-based, study order)."""
    experiment = study.experiments[index]
    _stage(index + 2 + bool(study.eda), n_stages, f"experiment {experiment.name}: "
           f"{experiment.model_dump().get('model', study.defaults.get('model', 'lenet'))}")


def _analyze(run_dir: Path, dataset, study: StudyConfig, quick: bool) -> dict:
    from ..analysis import analyze_run

    points = min(study.analysis.tsne_max_points, study.quick.tsne_max_points) if quick else \
        study.analysis.tsne_max_points
    return analyze_run(run_dir, dataset.test.images, dataset.classes, names=None, tsne_max_points=points,
                       seed=study.seed, feature_map_images=study.analysis.feature_map_images)


def _eda(dataset, out: Path, seed: int) -> dict:
    """The study's EDA, reused when a previous run of this study already wrote it."""
    from ..eda import run_eda

    done = out / "eda.json"
    if done.exists():
        try:
            record = json.loads(done.read_text())
            if record.get("source") == dataset.source and record.get("images", {}).get("train") == len(dataset.train):
                return record
        except ValueError:
            pass  # a damaged file: computed again
    return run_eda(dataset, out, seed=seed)


def _experiment_record(out: Path, name: str, metrics: dict, analysis: dict) -> dict:
    run_dir = out / "experiments" / name
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    figures = {k: f"experiments/{name}/{v}" for k, v in metrics.get("figures", {}).items()}
    figures.update({k: f"experiments/{name}/{v}" for k, v in analysis.get("figures", {}).items()})
    keep = ("model", "augment", "params", "epochs", "train_seconds", "train_images_per_second", "val_accuracy",
            "test_accuracy", "test_macro_f1", "test_weighted_f1", "test_top_k_accuracy", "top_k", "classes",
            "confusion_matrix", "confusion_matrix_normalized", "per_class", "pretrained_used", "pretrained_note",
            "best_epoch", "precision", "device")
    record = {"name": name, **{k: metrics.get(k) for k in keep}, "run_dir": f"experiments/{name}",
              "figures": figures, "history": history}
    misc = analysis.get("misclassification", {})
    record["misclassification"] = {k: misc.get(k) for k in ("n_errors", "closer_to_predicted_fraction",
                                                             "mean_distance_ratio", "median_distance_ratio",
                                                             "top_confusions")}
    record["overfit"] = analysis.get("overfit", {})
    record["tsne"] = analysis.get("tsne", {})
    return record


def run_study(study: StudyConfig, out: Path | None = None, quick: bool = False, where: str = "") -> Path:
    """Run (or finish) a whole study; returns the path of report.html."""
    from .. import __version__
    from ..report import render_markdown, write_report
    from .compare import observations, plot_accuracy_bars, plot_confusions
    from .parallel import plan_workers, run_parallel

    out = Path(out) if out else default_out(study, quick)
    _check_out(out)
    workers, gpus = plan_workers(study, out, quick, where)
    n_stages = len(study.experiments) + 3 + bool(study.eda)
    start = time.perf_counter()
    _stage(1, n_stages, f"data: {study.data.source}")
    dataset = load_study_data(study)
    summary_data = dataset.summary()
    log.info("%s: %d classes, %s images, train/val/test %s", study.data.source, len(dataset.classes),
             "x".join(map(str, dataset.image_shape)), "/".join(f"{v:,}" for v in summary_data["splits"].values()))
    eda = None
    if study.eda:
        _stage(2, n_stages, "exploratory analysis")
        eda = _eda(dataset, out / "eda", study.seed)
    if workers > 1:  # worker processes; results come back in study order
        results = run_parallel(study, out, quick, where, workers, gpus, n_stages)
    else:
        results = []
        for i, experiment in enumerate(study.experiments):
            experiment_stage(study, i, n_stages)
            results.append(run_experiment(study, experiment, dataset, out, quick, where))
    records = [_experiment_record(out, e.name, metrics, analysis)
               for e, (metrics, analysis) in zip(study.experiments, results)]
    _stage(n_stages - 1, n_stages, "comparison")
    (out / "comparison").mkdir(exist_ok=True)
    comparison = {"figures": {
        "accuracy_bars": str(plot_accuracy_bars(records, out / "comparison" / "accuracy.png").relative_to(out)),
        "confusion_matrices": str(plot_confusions(records, dataset.classes,
                                                  out / "comparison" / "confusion_matrices.png").relative_to(out)),
    }}
    summary = {
        "title": f"visionlab study: {study.name}", "study": study.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "visionlab_version": __version__, "quick": quick, "seed": study.seed,
        "dataset": {**summary_data, "name": study.data.source}, "eda": eda,
        "experiments": records, "comparison": comparison,
        "observations": observations(records, dataset.classes),
    }
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    write_text(out / "summary.md", render_markdown(summary))
    _stage(n_stages, n_stages, "report")
    report = write_report(out, summary)
    log.info("study done in %.0f s; report: %s", time.perf_counter() - start, report)
    return report


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{out}: cannot write the study folder ({exc.strerror}); choose another --out") from None
