"""The report: self-contained, escaped everywhere, and clean in a real browser."""
import json
import re

import numpy as np
import pytest

from browser import open_page
from conftest import write_image
from visionlab.cli import main
from visionlab.report import render_markdown, script_json, write_report

EVIL = ["<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>", 'a&b "q"']


def test_script_json_cannot_close_the_script_element():
    text = str(script_json({"name": "</script><script>alert(1)</script>", "amp": "a&b"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "amp": "a&b"}


def _fake_summary(root):
    import plotly.graph_objects as go

    (root / "experiments" / "e1").mkdir(parents=True)
    write_image(root / "experiments" / "e1" / "curves.png", np.zeros((20, 30), np.uint8))
    fig = go.Figure([go.Scatter3d(x=[0, 1], y=[0, 1], z=[0, 1], mode="markers", name=EVIL[1], text=EVIL)])
    (root / "experiments" / "e1" / "tsne.json").write_text(fig.to_json())
    record = {"name": "e1", "model": "mlp", "augment": "none", "params": 1234, "epochs": 1, "train_seconds": 1.0,
              "train_images_per_second": 100.0, "val_accuracy": 0.5, "test_accuracy": 0.5, "test_macro_f1": 0.4,
              "test_weighted_f1": 0.4, "test_top_k_accuracy": None, "top_k": 1, "classes": EVIL,
              "per_class": {c: {"precision": 1, "recall": 1, "f1-score": 1, "support": 1} for c in EVIL},
              "figures": {"curves": "experiments/e1/curves.png", "predictions": "experiments/e1/gone.png",
                          "tsne_3d_plotly": "experiments/e1/tsne.json"},
              "misclassification": {"n_errors": 1, "closer_to_predicted_fraction": 1.0, "mean_distance_ratio": 1.5,
                                    "top_confusions": [{"true": EVIL[0], "predicted": EVIL[1], "count": 1}]},
              "overfit": {"flag": False, "note": ""}, "tsne": {}, "pretrained_used": False, "pretrained_note": ""}
    return {"title": "t", "experiments": [record], "observations": [f"{EVIL[0]} is confused"],
            "dataset": {"source": EVIL[0], "classes": EVIL, "image_shape": [8, 8, 1],
                        "splits": {"train": 3, "val": 3, "test": 3},
                        "class_counts": {s: [1, 1, 1] for s in ("train", "val", "test")},
                        "skipped": [{"path": EVIL[1], "reason": "x"}], "duplicates_across_splits": 0},
            "comparison": {"figures": {}}}


def test_report_escapes_user_strings_and_is_self_contained(tmp_path):
    html = write_report(tmp_path, _fake_summary(tmp_path)).read_text()
    assert "<img src=x onerror" not in html and "</script><script>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "a&amp;b &#34;q&#34;" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert all(src.startswith("data:") for src in re.findall(r'<img src="([^"]+)"', html))
    assert "figure missing: experiments/e1/gone.png" in html
    assert "generated" in html
    md = render_markdown(_fake_summary(tmp_path))
    assert "| e1 | mlp |" in md and "50.00%" in md


def test_fake_report_in_browser(tmp_path):
    path = write_report(tmp_path, _fake_summary(tmp_path))
    seen = open_page(path)
    assert seen["console_errors"] == [] and seen["page_errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == []  # nothing fetched from the network
    assert all(i["ok"] for i in seen["images"])
    assert EVIL[0] in seen["text"] and EVIL[1] in seen["text"]
    assert seen["injected_img"] == 0 and seen["plots"] == 1


def test_real_study_report_in_browser(tmp_path, capsys):
    """A class folder named like an XSS payload, through a whole study, into Chromium."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for c, name in enumerate([EVIL[0], EVIL[2], "plain"]):
        for i in range(20):
            write_image(root / name / f"{i}.png", np.clip(rng.normal(50 + 70 * c, 20, (10, 10)), 0, 255).astype(np.uint8))
    study = tmp_path / "s.yaml"
    study.write_text("name: evil\nexperiments:\n  - {name: mlp, model: mlp, epochs: 1, device: cpu, precision: fp32}\n"
                     "  - {name: cnn2, model: cnn2, epochs: 1, device: cpu, precision: fp32}\n"
                     "analysis: {tsne_max_points: 60, feature_map_images: 1}\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--data", str(root), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "<img src=x onerror" not in html
    seen = open_page(out / "report.html", screenshot=tmp_path / "report.png")
    assert seen["console_errors"] == [] and seen["page_errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == []
    assert len(seen["images"]) >= 10 and all(i["ok"] for i in seen["images"])
    assert EVIL[0] in seen["text"] and EVIL[2] in seen["text"]
    assert seen["injected_img"] == 0
    assert seen["plots"] == 2  # one interactive 3D t-SNE per experiment
