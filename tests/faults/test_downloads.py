"""Fault 6: downloads. A wrong checksum deletes the file and fails; a file already on disk is
checked like a fresh one; plain http and redirects from https to http are refused. The network
is replaced by a fake opener: nothing leaves the machine."""
from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request

import pytest

from visionlab.data import downloads
from visionlab.errors import UserError

GOOD = b"the real file" * 1000
MD5 = hashlib.md5(GOOD).hexdigest()


class _Opener:
    def __init__(self, payload: bytes):
        self.payload = payload
        self.urls: list[str] = []

    def open(self, url, timeout=None):
        self.urls.append(url)
        return io.BytesIO(self.payload)


@pytest.fixture
def network(monkeypatch):
    def install(payload: bytes) -> _Opener:
        opener = _Opener(payload)
        monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: opener)
        return opener
    return install


def test_wrong_checksum_deletes_the_file_and_fails(tmp_path, network):
    network(b"a tampered file")
    dest = tmp_path / "train.gz"
    with pytest.raises(UserError, match="checksum mismatch.*deleted"):
        downloads.download("https://example.org/train.gz", dest, MD5)
    assert not dest.exists() and not list(tmp_path.iterdir())  # neither the file nor its .part


def test_right_checksum_lands_atomically(tmp_path, network):
    network(GOOD)
    dest = tmp_path / "train.gz"
    downloads.download("https://example.org/train.gz", dest, MD5)
    assert dest.read_bytes() == GOOD and [p.name for p in tmp_path.iterdir()] == ["train.gz"]


def test_plain_http_is_refused_before_any_request(tmp_path, network):
    opener = network(GOOD)
    with pytest.raises(UserError, match="plain http"):
        downloads.download("http://example.org/train.gz", tmp_path / "train.gz", MD5)
    assert opener.urls == []


def test_redirect_from_https_to_http_is_refused():
    handler = downloads._HttpsOnly()
    request = urllib.request.Request("https://example.org/train.gz")
    with pytest.raises(urllib.error.URLError, match="refused redirect"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.org/train.gz")
    followed = handler.redirect_request(request, None, 302, "Found", {}, "https://mirror.example.org/train.gz")
    assert followed.full_url == "https://mirror.example.org/train.gz"


def test_a_file_already_present_is_verified_not_trusted(tmp_path, monkeypatch, network):
    opener = network(GOOD)
    monkeypatch.setitem(downloads.FILES, "mnist", [("https://example.org/train.gz", MD5)])
    folder = tmp_path / "downloads" / "mnist"
    folder.mkdir(parents=True)
    (folder / "train.gz").write_bytes(b"left over from an interrupted copy")
    with pytest.raises(UserError, match="checksum mismatch"):
        downloads.fetch("mnist", tmp_path)
    assert not (folder / "train.gz").exists() and opener.urls == []  # deleted, and no silent re-download
    downloads.fetch("mnist", tmp_path)  # the next run downloads it afresh, and checks it
    assert (folder / "train.gz").read_bytes() == GOOD and opener.urls == ["https://example.org/train.gz"]


def test_every_builtin_url_is_https_with_a_pinned_md5():
    for name, files in downloads.FILES.items():
        for url, md5 in files:
            assert url.startswith("https://") and len(md5) == 32 and int(md5, 16) >= 0, (name, url)
