"""The decode cache (decode once, reuse, invalidate on change) and the split manifest
(stratified, seeded, saved, reused, reproducible) and the duplicate count across splits."""
from __future__ import annotations

import hashlib
import os
import random
import tarfile

import numpy as np
import pytest

from conftest import write_image
from visionlab.data import DataConfig, load_dataset
import visionlab.data.decode as decode_mod
import visionlab.data.splits as splits_mod

SPLITS = ("train", "val", "test")


def load(source, **kw):
    return load_dataset(DataConfig(source=str(source), **kw))


@pytest.fixture
def decode_spy(monkeypatch):
    """Counts calls of the per-image decoder (decoding runs in-process for small datasets)."""
    calls = []
    real = decode_mod.decode_image

    def spy(data, target):
        calls.append(len(data))
        return real(data, target)

    monkeypatch.setattr(decode_mod, "decode_image", spy)
    return calls


def membership(ds) -> dict[str, set[str]]:
    return {s: set(ds.names(s)) for s in SPLITS}


def make_counts_folder(root, counts: dict[str, int], hw=(4, 4), seed=0):
    """Distinct random images, counts[class] of each."""
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        for i in range(n):
            write_image(root / cls / f"{i:03d}.png", rng.integers(0, 256, hw, dtype=np.uint8))
    return root


# ----------------------------------------------------------------------------- cache

def test_second_load_is_cached_and_identical(class_folder, decode_spy, monkeypatch):
    first = load(class_folder)
    assert first.cached is False
    assert len(decode_spy) == 30
    assert first.summary()["cached"] is False

    def boom(*a, **k):
        raise AssertionError("decoded on a cached load")

    monkeypatch.setattr(decode_mod, "decode_image", boom)
    second = load(class_folder)
    assert second.cached is True
    assert second.summary()["cached"] is True
    assert second.cache_dir == first.cache_dir
    assert second.decode_seconds == pytest.approx(first.decode_seconds, abs=1e-9)
    assert second.classes == first.classes
    for s in SPLITS:
        np.testing.assert_array_equal(np.asarray(second.split(s).images), np.asarray(first.split(s).images))
        np.testing.assert_array_equal(np.asarray(second.split(s).labels), np.asarray(first.split(s).labels))
        assert second.names(s) == first.names(s)


def test_cached_load_of_an_array_source_reads_nothing(tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(0, 256, (20, 5, 5), dtype=np.uint8)
    path = tmp_path / "a.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 2)
    first = load(path)
    import visionlab.data.arrays as arrays_mod

    def boom(*a, **k):
        raise AssertionError("read the npz on a cached load")

    monkeypatch.setattr(arrays_mod, "read_npz", boom)
    monkeypatch.setattr(np, "load", _only_mmap(np.load))
    second = load(path)
    assert second.cached is True
    np.testing.assert_array_equal(np.asarray(second.train.images), np.asarray(first.train.images))


def _only_mmap(real_load):
    """np.load that refuses the source .npz (cache .npy files and manifests are fine)."""
    def guarded(file, *a, **k):
        if str(file).endswith("a.npz"):
            raise AssertionError("the source file was read on a cached load")
        return real_load(file, *a, **k)
    return guarded


def test_touched_file_decodes_again(class_folder, decode_spy):
    first = load(class_folder)
    n_first = len(decode_spy)
    target = class_folder / "dog" / "3.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = load(class_folder)
    assert second.cached is False
    assert len(decode_spy) > n_first
    assert second.cache_dir != first.cache_dir
    assert load(class_folder).cached is True  # and the new state is cached in turn


def test_changed_file_content_is_picked_up(class_folder):
    load(class_folder)
    target = class_folder / "eel" / "0.png"
    new = np.full((12, 12), 7, np.uint8)
    new[0, :] = np.arange(12, dtype=np.uint8)  # different content and a different file size
    write_image(target, new)
    ds = load(class_folder)
    assert ds.cached is False
    found = [ds.split(s).images[i] for s in SPLITS for i, n in enumerate(ds.names(s)) if n == "eel/0.png"]
    assert len(found) == 1
    np.testing.assert_array_equal(found[0][..., 0], new)


def test_added_file_decodes_again(class_folder):
    load(class_folder)
    write_image(class_folder / "cat" / "extra.png", np.zeros((12, 12), np.uint8))
    ds = load(class_folder)
    assert ds.cached is False
    assert sum(len(ds.split(s)) for s in SPLITS) == 31


def test_decode_options_have_their_own_entries(class_folder, decode_spy):
    native = load(class_folder)
    small = load(class_folder, image_size=8)
    rgb = load(class_folder, channels="3")
    assert not small.cached and not rgb.cached
    assert len({native.cache_dir, small.cache_dir, rgb.cache_dir}) == 3
    assert native.image_shape == (12, 12, 1)
    assert small.image_shape == (8, 8, 1)
    assert rgb.image_shape == (12, 12, 3)
    n = len(decode_spy)
    again = load(class_folder, image_size=8)
    assert again.cached is True and again.image_shape == (8, 8, 1)
    assert len(decode_spy) == n
    np.testing.assert_array_equal(np.asarray(again.train.images), np.asarray(small.train.images))


def test_cache_dir_option_and_default_home(class_folder, tmp_path, visionlab_home):
    ds = load(class_folder)
    assert visionlab_home in ds.cache_dir.parents
    elsewhere = tmp_path / "elsewhere"
    other = load(class_folder, cache_dir=str(elsewhere))
    assert other.cached is False  # a different cache does not share entries
    assert elsewhere in other.cache_dir.parents
    assert other.summary()["cache_dir"] == str(other.cache_dir)
    assert list(other.cache_dir.glob("*.npy"))


# ----------------------------------------------------------------------------- splits

def test_split_is_stratified_with_exact_totals(tmp_path):
    root = make_counts_folder(tmp_path / "strat", {"a": 50, "b": 30, "c": 20})
    ds = load(root)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (80, 10, 10)
    assert np.bincount(ds.train.labels, minlength=3).tolist() == [40, 24, 16]
    assert np.bincount(ds.val.labels, minlength=3).tolist() == [5, 3, 2]
    assert np.bincount(ds.test.labels, minlength=3).tolist() == [5, 3, 2]
    assert ds.summary()["class_counts"] == {"train": [40, 24, 16], "val": [5, 3, 2], "test": [5, 3, 2]}
    m = membership(ds)
    assert not (m["train"] & m["val"]) and not (m["train"] & m["test"]) and not (m["val"] & m["test"])
    assert len(m["train"] | m["val"] | m["test"]) == 100
    # labels follow the folder of each file
    for s in SPLITS:
        for name, lab in zip(ds.names(s), ds.split(s).labels):
            assert ds.classes[lab] == name.split("/")[0]


def test_split_with_a_single_image_class(tmp_path):
    root = make_counts_folder(tmp_path / "single", {"a": 1, "b": 19})
    ds = load(root)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 2, 2)
    assert np.bincount(ds.train.labels, minlength=2).tolist() == [1, 15]


def test_split_fractions(tmp_path):
    root = make_counts_folder(tmp_path / "frac", {"a": 30, "b": 30})
    ds = load(root, val_fraction=0.2, test_fraction=0.3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 12, 18)
    assert np.bincount(ds.test.labels).tolist() == [9, 9]


def test_split_is_seeded(class_folder, tmp_path):
    a = load(class_folder, seed=7, cache_dir=str(tmp_path / "c1"))
    b = load(class_folder, seed=7, cache_dir=str(tmp_path / "c2"))
    assert a.cache_dir != b.cache_dir and not b.cached  # independently made, not the same manifest read back
    assert membership(a) == membership(b)
    for s in SPLITS:
        np.testing.assert_array_equal(a.split(s).index, b.split(s).index)
    c = load(class_folder, seed=8, cache_dir=str(tmp_path / "c1"))
    assert c.cached is True  # the seed is not part of the decode cache key
    assert membership(c)["test"] != membership(a)["test"] or membership(c)["val"] != membership(a)["val"]


def test_split_does_not_depend_on_directory_listing_order(class_folder, tmp_path, monkeypatch):
    """Same files + same seed = same split, whatever order the filesystem lists the files in
    (ext4 lists by a per-filesystem hash, so two machines differ)."""
    real_walk = os.walk

    def walker(reverse):
        def walk(top, *a, **k):
            for dirpath, dirnames, filenames in real_walk(top, *a, **k):
                dirnames.sort(reverse=reverse)
                yield dirpath, dirnames, sorted(filenames, reverse=reverse)
        return walk

    results = []
    for i, reverse in enumerate((False, True)):
        with monkeypatch.context() as m:
            m.setattr(os, "walk", walker(reverse))
            results.append(load(class_folder, seed=0, cache_dir=str(tmp_path / f"order{i}")))
    forward, backward = results
    assert forward.classes == backward.classes
    assert membership(forward) == membership(backward)


def test_split_of_an_archive_matches_its_folder(class_folder, tmp_path):
    """An archive of a folder (members in any order) splits exactly like the folder itself."""
    files = sorted(p for p in class_folder.rglob("*.png"))
    random.Random(4).shuffle(files)
    archive = tmp_path / "shuffled.tar"
    with tarfile.open(archive, "w") as tf:
        for p in files:
            tf.add(p, arcname=p.relative_to(class_folder).as_posix())
    assert membership(load(archive)) == membership(load(class_folder))


def test_manifest_is_saved_and_reused(class_folder, monkeypatch):
    first = load(class_folder)
    manifests = list((first.cache_dir / "splits").glob("*"))
    assert len(manifests) == 1 and manifests[0].stat().st_size > 0

    def boom(*a, **k):
        raise AssertionError("split made again instead of read from the manifest")

    with monkeypatch.context() as m:  # not monkeypatch.undo(): that would also drop VISIONLAB_HOME
        m.setattr(splits_mod, "make_split", boom)
        second = load(class_folder)
    for s in SPLITS:
        np.testing.assert_array_equal(second.split(s).index, first.split(s).index)
    load(class_folder, seed=3)
    load(class_folder, val_fraction=0.2)
    assert len(list((first.cache_dir / "splits").glob("*"))) == 3


def test_shipped_test_split_kept_val_carved(tmp_path):
    root = tmp_path / "shipped"
    make_counts_folder(root / "train", {"a": 20, "b": 10})
    make_counts_folder(root / "test", {"a": 4, "b": 3}, seed=1)
    ds = load(root, test_fraction=0.5)  # ignored: the source ships a test split
    assert len(ds.test) == 7
    assert all(n.startswith("test/") for n in ds.names("test"))
    assert (len(ds.train), len(ds.val)) == (27, 3)
    assert np.bincount(ds.val.labels).tolist() == [2, 1]


# ----------------------------------------------------------------------------- duplicates

def _hashes(images) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest() for img in np.asarray(images)]


def expected_leaks(ds) -> int:
    seen: set[str] = set()
    leaks = 0
    for s in SPLITS:
        hs = _hashes(ds.split(s).images)
        leaks += sum(h in seen for h in hs)
        seen |= set(hs)
    return leaks


def test_duplicates_across_splits_are_counted(tmp_path):
    root = make_counts_folder(tmp_path / "dups", {"a": 30, "b": 30})
    same = np.full((4, 4), 123, np.uint8)
    for i in range(30):  # a whole class of identical images: stratification puts 3 in val and 3 in test
        write_image(root / "c" / f"{i}.png", same)
    # and one image of class a copied into class b
    (root / "b" / "copy.png").write_bytes((root / "a" / "000.png").read_bytes())
    ds = load(root)
    expected = expected_leaks(ds)
    assert expected >= 6
    assert ds.duplicates_across_splits == expected
    assert ds.summary()["duplicates_across_splits"] == expected
    assert load(root).duplicates_across_splits == expected  # the cached load agrees


def test_duplicate_in_shipped_test_split(tmp_path):
    root = tmp_path / "leak"
    make_counts_folder(root / "train", {"a": 10, "b": 10})
    make_counts_folder(root / "test", {"a": 2, "b": 2}, seed=9)
    (root / "test" / "a" / "leaked.png").write_bytes((root / "train" / "b" / "004.png").read_bytes())
    ds = load(root)
    assert ds.duplicates_across_splits == 1 == expected_leaks(ds)


def test_no_duplicates_in_a_clean_set(class_folder):
    ds = load(class_folder)
    assert ds.duplicates_across_splits == 0 == expected_leaks(ds)


# ----------------------------------------------------------------------------- classes

def test_class_order_is_sorted(tmp_path):
    names = ["b", "a", "C", "10", "9"]
    root = make_counts_folder(tmp_path / "order", {n: 3 for n in names})
    ds = load(root, val_fraction=0, test_fraction=0)
    assert ds.classes == ["10", "9", "C", "a", "b"]
    for name, lab in zip(ds.names("train"), ds.train.labels):
        assert ds.classes[lab] == name.split("/")[0]
