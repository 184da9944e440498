"""Shared fixtures. Every test gets its own empty cache (VISIONLAB_HOME) so nothing leaks between
tests or reads the user's cache; tests never touch the network or ../shared."""
import os

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def visionlab_home(tmp_path, monkeypatch):
    home = tmp_path / "vlhome"
    monkeypatch.setenv("VISIONLAB_HOME", str(home))
    return home


def write_image(path, array, **save_kwargs):
    """Save a uint8 (H, W) or (H, W, C) array as an image file, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if array.ndim == 2 else {3: "RGB", 4: "RGBA"}[array.shape[2]]
    Image.fromarray(array, mode).save(path, **save_kwargs)
    return path


@pytest.fixture
def class_folder(tmp_path):
    """root/<class>/<i>.png: 3 classes x 10 gray 12x12 images, each class a distinct brightness."""
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "eel"]):
        for i in range(10):
            img = np.clip(rng.normal(60 + 70 * c, 10, (12, 12)), 0, 255).astype(np.uint8)
            write_image(root / name / f"{i}.png", img)
    return root


def pytest_configure(config):
    os.environ.setdefault("TQDM_DISABLE", "1")
