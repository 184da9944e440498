"""Shared fixtures. Every test gets its own empty cache (VISIONLAB_HOME) so nothing leaks between
tests or reads the user's cache; tests never touch the network or ../shared."""
import gc
import os

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def visionlab_home(tmp_path, monkeypatch, kernels_dir):
    home = tmp_path / "vlhome"
    monkeypatch.setenv("VISIONLAB_HOME", str(home))
    monkeypatch.setenv("VISIONLAB_KERNELS", str(kernels_dir))
    return home


@pytest.fixture(scope="session")
def kernels_dir(tmp_path_factory):
    """One folder of compiled kernels (visionlab/models/maxpool.py) for the whole session, so that the
    commands tests run in new processes do not each compile the kernel again."""
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture(autouse=True)
def unfreeze_heap():
    """The commands main() runs freeze the heap after importing (cli._importing), which suits a
    fresh process; in this long-lived one, hand frozen objects back to the collector after each test."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models and batches (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    one thread is as fast there, and on a shared 2-core machine two threads wait for each other at
    every operator, up to ~10x slower; the thread count is restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
