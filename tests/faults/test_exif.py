"""Fault 12: a photo stored sideways with EXIF orientation 6 has the same, upright pixel layout
in training (the dataset decode) and in `visionlab predict` (a user's file at inference)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import write_image
from visionlab.cli import main
from visionlab.data import load_dataset
from visionlab.evaluation import evaluate as evaluate_module
from visionlab.evaluation import predict_images


def test_exif_rotated_photo_is_the_same_in_training_and_in_predict(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for i in range(10):
            write_image(root / name / f"{i}.png", rng.integers(0, 60, (12, 12), dtype=np.uint8))
    sideways = root / "a" / "sideways.jpg"
    im = Image.new("L", (12, 12), 0)
    im.paste(255, (0, 0, 5, 5))  # a white block in the stored top-left corner
    exif = im.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the block belongs top-right
    im.save(sideways, "JPEG", exif=exif.tobytes(), quality=95)

    dataset = load_dataset(str(root))
    found = [(s, i) for s in ("train", "val", "test") for i, n in enumerate(dataset.names(s)) if n.endswith("sideways.jpg")]
    assert len(found) == 1
    split, i = found[0]
    trained_on = np.asarray(dataset.split(split).images[i])[..., 0].astype(int)
    assert trained_on[:5, 7:].mean() > 200 and trained_on[:5, :5].mean() < 50  # upright

    assert main(["train", "--data", str(root), "--model", "mlp", "--epochs", "1", "--device", "cpu",
                 "--out", str(tmp_path / "run")]) == 0
    seen = []
    real = evaluate_module._infer_split

    def capture(model, images, *args, **kwargs):
        seen.append(np.array(images))
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "_infer_split", capture)
    predict_images(tmp_path / "run", [str(sideways)])
    assert np.array_equal(seen[0][0][..., 0].astype(int), trained_on)
