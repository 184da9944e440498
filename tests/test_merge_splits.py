"""merge_splits pools a source's own splits and splits them anew (80/10/10 by default)."""
import numpy as np

from conftest import write_image
from visionlab.data import DataConfig, load_dataset


def test_merge_splits_pools_official_splits(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        for c in ("a", "b"):
            for i in range(n // 2):
                write_image(root / split / c / f"{split}{i}.png", rng.integers(0, 255, (6, 6), dtype=np.uint8))
    kept = load_dataset(DataConfig(source=str(root)))
    assert (len(kept.train), len(kept.val), len(kept.test)) == (36, 4, 10)
    merged = load_dataset(DataConfig(source=str(root), merge_splits=True))
    assert (len(merged.train), len(merged.val), len(merged.test)) == (40, 5, 5)
    assert np.bincount(merged.test.labels).tolist() in ([2, 3], [3, 2])  # stratified
    names = merged.names("test") + merged.names("val") + merged.names("train")
    assert len(set(names)) == 50 and any(n.startswith("test/") for n in names)
    again = load_dataset(DataConfig(source=str(root), merge_splits=True))
    assert np.array_equal(again.test.images, merged.test.images)  # the manifest is reused
