"""The report: one self-contained file, every user string shown as text, clean in a real browser."""
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from browser import open_page
from conftest import write_image
from visionlab.report import render_markdown, write_report
from visionlab.report.html import plotly_text, script_json

EVIL = ["<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>", 'a&b "q"']
# '<b>' is markup plotly would render (bold, no tags shown); '$' would be mathtext in a matplotlib label
CLASSES = [*EVIL, "<b>bold</b>", "$5 and $x^2"]
ESCAPED = ["&lt;img src=x onerror=alert(1)&gt;", "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;",
           "a&amp;b &#34;q&#34;"]
FIGURES = ["confusion_matrix", "curves", "predictions", "tsne_2d", "tsne_3d", "distance_ratio", "confident_mistakes",
           "feature_maps", "feature_maps_errors"]


def _plotly_json(names: list[str]) -> str:
    import plotly.graph_objects as go

    traces = [go.Scatter3d(x=[k, k + 1], y=[0, 1], z=[1, k], mode="markers", name=name, hoverinfo="text",
                           text=[f"{name} (test #{k})"] * 2) for k, name in enumerate(names)]
    return go.Figure(traces, layout={"title": {"text": f"t-SNE of {names[0]}"}, "height": 400}).to_json()


def _experiment(root, name: str, k: int, accuracy: float) -> dict:
    """One experiment record with every figure as a small real PNG under experiments/<name>/."""
    folder = root / "experiments" / name
    rng = np.random.default_rng(k)
    figures = {}
    for j, figure in enumerate(FIGURES):
        write_image(folder / f"{figure}.png", rng.integers(0, 255, (24 + j, 40, 3), dtype=np.uint8))
        figures[figure] = f"experiments/{name}/{figure}.png"
    (folder / "tsne_3d.json").write_text(_plotly_json(CLASSES))
    figures["tsne_3d_plotly"] = f"experiments/{name}/tsne_3d.json"
    n = len(CLASSES)
    return {
        "name": name, "model": "resnet18" if k else "mlp", "augment": ["crop:4", "flip"] if k else "none",
        "params": 1_234_567 * (k + 1), "epochs": 3, "train_seconds": 12.34 + 300 * k,
        "train_images_per_second": 4321.5, "val_accuracy": accuracy - 0.01, "test_accuracy": accuracy,
        "test_macro_f1": 0.9, "test_weighted_f1": 0.91, "test_top_k_accuracy": 1.0, "top_k": 3, "classes": CLASSES,
        "confusion_matrix": np.eye(n, dtype=int).tolist(), "best_epoch": 2,
        "per_class": {c: {"precision": 1.0, "recall": 0.5, "f1-score": 0.667, "support": 4} for c in CLASSES},
        "pretrained_used": False,
        "pretrained_note": f"from scratch: ImageNet weights unavailable ({EVIL[0]})" if k else "from scratch",
        "run_dir": f"experiments/{name}", "figures": figures,
        "misclassification": {"n_errors": 3, "closer_to_predicted_fraction": 2 / 3, "mean_distance_ratio": 1.2,
                              "median_distance_ratio": 1.1,
                              "top_confusions": [{"true": EVIL[0], "predicted": EVIL[1], "count": 2}]},
        "overfit": {"flag": bool(k), "gap": 0.2 * k, "note": f"gap {0.2 * k:.3f}"},
        "tsne": {"n_points": 60, "n_test": 80, "subsampled": True, "pca_dims": 50, "perplexity": 30},
        "history": [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5 + e / 10, "val_loss": 1.1 / e,
                     "val_accuracy": 0.5 + e / 11} for e in (1, 2, 3)]}


def fake_summary(root) -> dict:
    """A study summary with two experiments, hostile class names, and one figure file missing."""
    experiments = [_experiment(root, f"mlp {EVIL[0]}", 0, 0.98421), _experiment(root, "resnet18-aug", 1, 0.7)]
    experiments[0]["figures"]["predictions"] = "experiments/gone.png"
    (root / "comparison").mkdir(parents=True, exist_ok=True)
    write_image(root / "comparison" / "accuracy.png", np.full((30, 50, 3), 200, np.uint8))
    n = len(CLASSES)
    return {
        "title": f"visionlab study: {EVIL[1]}", "created": "2026-11-21T18:00:00+00:00", "visionlab_version": "0.1.0",
        "study": "evil", "quick": True, "seed": 0,
        "dataset": {"source": f"/data/{EVIL[0]}.zip", "classes": CLASSES, "image_shape": [8, 8, 1],
                    "splits": {"train": 40 * n, "val": 5 * n, "test": 4 * n},
                    "class_counts": {"train": [40] * n, "val": [5] * n, "test": [4] * n},
                    "skipped": [{"path": f"{EVIL[1]}/bad.png", "reason": "not an image"}],
                    "duplicates_across_splits": 2, "decode_seconds": 0.5, "cached": False},
        "eda": None, "experiments": experiments,
        "comparison": {"figures": {"accuracy_bars": "comparison/accuracy.png",
                                   "confusion_matrices": "comparison/missing.png"}},
        "observations": [f"{EVIL[0]} is most often confused with {EVIL[1]}."]}


class _Tags(HTMLParser):
    """Every start tag and its attributes; script contents (plotly.js holds URLs in strings) are not tags."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_script_json_cannot_end_the_script_element():
    value = {"name": EVIL[1], "amp": "a&b", "sep": "\u2028\u2029"}
    text = str(script_json(value))
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == value


def test_plotly_text_escapes_every_string_but_templates():
    figure = {"data": [{"name": EVIL[0], "text": [EVIL[2]], "hovertemplate": "%{text}<br>", "x": [float("nan"), 1]}],
              "layout": {"title": {"text": EVIL[1]}}}
    safe = plotly_text(figure)
    assert safe["data"][0]["name"] == ESCAPED[0] and safe["data"][0]["text"] == [ESCAPED[2]]
    assert safe["layout"]["title"]["text"] == ESCAPED[1]
    assert safe["data"][0]["hovertemplate"] == "%{text}<br>" and safe["data"][0]["x"] == [None, 1]


def test_report_is_one_self_contained_escaped_file(tmp_path):
    from plotly.offline import get_plotlyjs

    path = write_report(tmp_path, fake_summary(tmp_path))
    assert path == tmp_path / "report.html" and not list(tmp_path.glob(".*tmp"))
    html = path.read_text(encoding="utf-8")
    tags = _Tags(html).tags
    urls = [v for _, attrs in tags for k, v in attrs.items() if k in ("src", "href") and v]
    assert urls and not [u for u in urls if re.match(r"\s*(https?:)?//", u, re.IGNORECASE)]
    assert not [t for t, _ in tags if t in ("link", "iframe", "object", "embed")]
    sources = [attrs.get("src", "") for t, attrs in tags if t == "img"]
    assert len(sources) == 2 * len(FIGURES) - 1 + 2  # all but the missing ones, plus accuracy and class counts
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in sources)
    assert "<img src=x onerror" not in html and "</script><script>" not in html and "<script>alert" not in html
    for escaped in ESCAPED:
        assert escaped in html
    assert html.count(get_plotlyjs()[:300]) == 1  # one plotly.js for both interactive figures
    figures = [json.loads(t) for t in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html)]
    assert len(figures) == 2 and figures[0]["data"][0]["name"] == ESCAPED[0]  # plotly shows it as text
    assert "figure not available: <code>experiments/gone.png</code> (file missing)" in html
    assert "comparison/missing.png" in html
    assert "generated from the measured numbers" in html and "Quick mode" in html and "EDA not run" in html
    assert "98.42%" in html and "12.3 s" in html and "5 min 12 s" in html and "2,469,134" in html
    all_ids = [attrs["id"] for _, attrs in tags if "id" in attrs]
    ids = set(all_ids)
    assert len(ids) == len(all_ids)  # anchors are unique
    links = set(re.findall(r'href="#([^"]+)"', html))
    assert {"dataset", "eda", "comparison", "experiments", "analysis", "exp-2", "analysis-2"} <= links <= ids
    assert 'class="flag"' in html and "Trained without pretrained weights" in html


def test_missing_keys_and_figures_still_render(tmp_path):
    from plotly.offline import get_plotlyjs

    summary = {"dataset": {}, "experiments": [{"name": "only a name", "figures": {"curves": "../outside.png"}}]}
    (tmp_path / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    html = write_report(tmp_path / "study", summary).read_text()
    assert "only a name" in html and "EDA not run" in html and "–" in html
    assert "(outside the study folder)" in html and "<img" not in html
    assert get_plotlyjs()[:300] not in html  # no interactive figure, no plotly.js
    assert "| only a name |" in render_markdown(summary)


def test_failed_write_keeps_the_old_report(tmp_path, monkeypatch):
    import visionlab.files

    (tmp_path / "report.html").write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(visionlab.files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_report(tmp_path, {"dataset": {}, "experiments": []})
    assert (tmp_path / "report.html").read_text() == "old" and not list(tmp_path.glob(".*tmp"))


def test_markdown_table_escapes_user_strings(tmp_path):
    md = render_markdown(fake_summary(tmp_path))
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and all(row.count(" | ") == 10 for row in rows)  # header + 2, 11 columns each
    assert r"| mlp \<img src=x onerror=alert(1)\> | mlp | none | 1,234,567 | 3 | 12.3 s |" in md
    assert "| resnet18-aug | resnet18 | crop:4, flip |" in md and "| 98.42% | 0.9000 | 66.7% |" in md
    assert not re.search(r"(?<!\\)[<>]", md) and "generated from the measured numbers" in md


def test_report_in_browser(tmp_path):
    """In headless Chromium: no errors, no dialog, every image drawn, the hostile names shown as text."""
    path = write_report(tmp_path, fake_summary(tmp_path))
    seen = open_page(path, evaluate={
        "injected": "document.querySelectorAll('img[src=\"x\"], img[src=x]').length",
        "plots": "document.querySelectorAll('.plot3d .plot-container').length",
        "drawn": "document.querySelectorAll('.plot3d .gl-container canvas').length",  # WebGL drew the scene
        "legend": "Array.from(document.querySelectorAll('.plot3d .legend')).map(l => l.textContent).join('|')",
        "nav": "getComputedStyle(document.querySelector('nav.toc')).position",
    })
    assert seen["console_errors"] == [] and seen["page_errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == [] and seen["failed"] == []
    assert len(seen["images"]) == 2 * len(FIGURES) + 1 and all(i["ok"] for i in seen["images"])
    for name in EVIL:
        assert name in seen["text"]
    assert seen["injected"] == 0
    assert seen["plots"] == 2 and seen["drawn"] == 2
    for name in CLASSES:  # plotly shows the names as text, tags and all
        assert name in seen["legend"] and name in seen["text"]
    assert seen["nav"] == "sticky"


def test_real_study_report_in_browser(tmp_path):
    """A class folder named like an XSS payload, through a whole study, into Chromium."""
    from visionlab.cli import main

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for c, name in enumerate([EVIL[0], EVIL[2], "plain"]):
        for i in range(40):  # 12 test images in all: enough for t-SNE
            pixels = np.clip(rng.normal(50 + 70 * c, 20, (10, 10)), 0, 255).astype(np.uint8)
            write_image(root / name / f"{i}.png", pixels)
    study = tmp_path / "s.yaml"
    study.write_text("name: evil\nexperiments:\n  - {name: mlp, model: mlp, epochs: 1, device: cpu, precision: fp32}\n"
                     "  - {name: cnn2, model: cnn2, epochs: 1, device: cpu, precision: fp32}\n"
                     "analysis: {tsne_max_points: 60, feature_map_images: 1}\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--data", str(root), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "<img src=x onerror" not in html and "figure not available" not in html
    seen = open_page(out / "report.html", evaluate={
        "injected": "document.querySelectorAll('img[src=\"x\"], img[src=x]').length",
        "drawn": "document.querySelectorAll('.plot3d .gl-container canvas').length"})
    assert seen["console_errors"] == [] and seen["page_errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == []
    assert len(seen["images"]) >= 10 and all(i["ok"] for i in seen["images"])
    assert EVIL[0] in seen["text"] and EVIL[2] in seen["text"] and seen["injected"] == 0
    assert seen["drawn"] == 2  # one interactive 3D t-SNE per experiment
    assert "Hand-crafted features" in seen["text"] and "Augmentation previews" in seen["text"]  # the EDA section
    eda = open_page(out / "eda" / "eda.html")  # the EDA's own page
    assert eda["console_errors"] == [] and eda["page_errors"] == [] and eda["requests"] == []
    assert len(eda["images"]) >= 7 and all(i["ok"] for i in eda["images"]) and EVIL[0] in eda["text"]
