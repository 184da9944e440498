"""visionlab.files: the atomic writes every JSON, page, log and array record goes through."""
import numpy as np
import pytest

import visionlab.files
from visionlab.files import save_npz, write_text


def test_write_text_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("old")
    assert write_text(path, "new ✓") == path
    assert path.read_text(encoding="utf-8") == "new ✓" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


def test_save_npz_round_trips_with_the_exact_name(tmp_path):
    path = tmp_path / "predictions.npz"
    save_npz(path, logits=np.eye(3, dtype=np.float32), labels=np.arange(3))
    save_npz(tmp_path / "record.npz", compressed=True, masks=np.zeros((2, 4, 4), np.uint8))
    with np.load(path) as z:
        assert np.array_equal(z["logits"], np.eye(3)) and np.array_equal(z["labels"], np.arange(3))
    with np.load(tmp_path / "record.npz") as z:
        assert z["masks"].shape == (2, 4, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.npz", "record.npz"]


@pytest.mark.parametrize("write", [lambda p: write_text(p, "new"), lambda p: save_npz(p, a=np.ones(3))])
def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, write):
    path = tmp_path / "out.npz"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(visionlab.files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_load_npz_reads_arrays_and_refuses_in_one_line(tmp_path):
    from visionlab.errors import UserError
    from visionlab.files import load_npz

    save_npz(tmp_path / "ok.npz", a=np.arange(4))
    assert np.array_equal(load_npz(tmp_path / "ok.npz", "record")["a"], np.arange(4))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"bad.npz: cannot read the predictions record"):
        load_npz(tmp_path / "bad.npz", "predictions record")
    np.savez(tmp_path / "pickled.npz", o=np.array([{"x": 1}], dtype=object))  # never unpickled
    with pytest.raises(UserError, match="cannot read"):
        load_npz(tmp_path / "pickled.npz", "record")["o"]
