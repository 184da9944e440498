"""The study: one command from data to report; resumable; bad study files are one line."""
import json

import pytest

from visionlab.cli import main
from visionlab.study import load_study, run_study
from visionlab.training import run as run_module

STUDY = """
name: tiny
data: digits
seed: 0
defaults:
  epochs: 2
  batch_size: 64
  device: cpu
  precision: fp32
experiments:
  - name: mlp
    model: mlp
    hidden: [64]
  - name: cnn2
    model: cnn2
analysis:
  tsne_max_points: 120
  feature_map_images: 2
"""


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


def test_study_writes_report_summary_and_run_folders(tmp_path, study_file, capsys):
    out = tmp_path / "out"
    assert main(["run", str(study_file), "--out", str(out)]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [e["name"] for e in summary["experiments"]] == ["mlp", "cnn2"]
    for e in summary["experiments"]:
        assert (out / e["run_dir"] / "model.safetensors").exists()
        assert 0.3 < e["test_accuracy"] <= 1.0
        misc = e["misclassification"]
        assert misc["n_errors"] == round((1 - e["test_accuracy"]) * 180)
        assert 0.0 <= misc["closer_to_predicted_fraction"] <= 1.0
        for key in ("confusion_matrix", "curves", "predictions", "tsne_2d", "tsne_3d"):
            assert (out / e["figures"][key]).exists(), key
    assert "feature_maps" in summary["experiments"][1]["figures"]  # the CNN has conv layers
    assert summary["observations"] and (out / "summary.md").read_text().count("|") > 10
    assert (out / "comparison" / "accuracy.png").exists()
    html = (out / "report.html").read_text()
    assert "cnn2" in html and "data:image/png;base64," in html


def test_killed_study_resumes_without_retraining(tmp_path, study_file, monkeypatch):
    out = tmp_path / "out"
    study, where = load_study(study_file)
    real = run_module.train_one_epoch
    calls = {"n": 0}

    def dies_in_second_experiment(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # mlp: epochs 1-2; cnn2: killed in its first epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_one_epoch", dies_in_second_experiment)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, where=where)
    first = (out / "experiments" / "mlp" / "model.safetensors").stat().st_mtime_ns
    calls["n"] = 100  # from now on every call trains; count them
    run_study(study, out, where=where)
    assert calls["n"] == 102  # only cnn2's two epochs ran again: mlp was kept
    assert (out / "experiments" / "mlp" / "model.safetensors").stat().st_mtime_ns == first
    assert (out / "report.html").exists()


def test_killed_during_report_reruns_report_only(tmp_path, study_file, monkeypatch):
    out = tmp_path / "out"
    study, where = load_study(study_file)
    import visionlab.report as report_module

    real = report_module.write_report
    monkeypatch.setattr(report_module, "write_report", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, where=where)
    assert not (out / "report.html").exists()
    monkeypatch.setattr(report_module, "write_report", real)
    monkeypatch.setattr(run_module, "train_one_epoch", lambda *a, **k: pytest.fail("retrained"))
    run_study(study, out, where=where)
    assert "cnn2" in (out / "report.html").read_text()


@pytest.mark.parametrize("text, message", [
    ("name: x\nexperiments: [{name: a, model: mlp}]\nepochs: 3\n", "unknown key 'epochs'"),
    ("name: x\nexperiments: [{name: a, model: alexnet}]\n", "unknown model 'alexnet'"),
    ("name: x\ndata: /no/such/folder\nexperiments: [{name: a, model: mlp}]\n", "no such file"),
    ("name: x\nexperiments: [{name: a, model: mlp, epochs: many}]\n", "epochs"),
    ("name: x\nexperiments: []\n", "experiments"),
    ("name: x\nexperiments: [{name: a, model: mlp}, {name: a, model: cnn}]\n", "unique"),
    ("name: x\nexperiments: [{name: a, model: mlp, seed: 3}]\n", "whole study"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_study_files_are_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_changed_experiment_settings_are_refused(tmp_path, study_file, capsys):
    out = tmp_path / "out"
    assert main(["run", str(study_file), "--out", str(out)]) == 0
    study_file.write_text(STUDY.replace("epochs: 2", "epochs: 3"))
    assert main(["run", str(study_file), "--out", str(out)]) == 2
    assert "other settings (epochs)" in capsys.readouterr().err


def test_a_run_saved_before_a_key_existed_is_still_the_same_experiment(tmp_path, study_file):
    import yaml

    out = tmp_path / "out"
    assert main(["run", str(study_file), "--out", str(out)]) == 0
    for config_file in (out / "experiments").glob("*/config.yaml"):  # as written by an older visionlab
        saved = yaml.safe_load(config_file.read_text())
        del saved["tta"], saved["devices"]
        config_file.write_text(yaml.safe_dump(saved))
    (out / "report.html").unlink()
    assert main(["run", str(study_file), "--out", str(out)]) == 0  # reused, not refused
    assert (out / "report.html").exists()


def test_every_example_study_validates():
    from pathlib import Path

    studies = sorted((Path(__file__).parents[1] / "studies").glob("*.yaml"))
    assert {p.stem for p in studies} >= {"digits", "svhn", "fashion-mnist", "mnist", "folder", "cifar10"}
    for path in studies:  # folder.yaml names a placeholder folder: it is run with --data
        study, _ = load_study(path, data="digits" if path.stem == "folder" else None)
        assert study.experiments


def test_default_study_is_studies_digits_yaml():
    """`visionlab run` with no arguments and `visionlab run studies/digits.yaml` are one study."""
    from pathlib import Path

    default, _ = load_study(None)
    written, _ = load_study(Path(__file__).parents[1] / "studies" / "digits.yaml")
    assert default.model_dump() == written.model_dump()
    other, _ = load_study(None, data="digits")  # --data alone: the generic default experiments
    assert other.name == "default" and other.defaults == {"epochs": 10}
