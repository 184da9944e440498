"""The built-in datasets' official files: where they live, their pinned checksums, and the download.

Files go to ``$VISIONLAB_HOME/downloads/<name>/``. A file found there is checked against its
checksum like a fresh download; a file that fails is deleted and the command fails. Downloads
are https only: a redirect to http is refused, never followed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)

# name -> [(url, md5 published by the dataset's authors)]
FILES: dict[str, list[tuple[str, str]]] = {
    "mnist": [  # the copy torchvision uses: the original host serves http only
        ("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ],
    "fashion-mnist": [
        ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ],
    "cifar10": [  # the binary version: the python version is pickles, which we never load
        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
    ],
    "svhn": [
        ("https://ufldl.stanford.edu/housenumbers/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("https://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    ],
}
BUILTIN = ("digits", *FILES)


class _HttpsOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith("https://"):
            raise urllib.error.URLError(f"refused redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 60) -> None:
    """Fetch url to dest (via a temporary file), verify the md5, or delete and fail."""
    if not url.lower().startswith("https://"):
        raise UserError(f"refused to download over plain http: {url}")
    tmp = dest.with_name(dest.name + ".part")
    opener = urllib.request.build_opener(_HttpsOnly)
    log.info("downloading %s", url)
    try:
        with opener.open(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"could not download {url} ({getattr(exc, 'reason', exc)}); offline? put the file in {dest.parent}/"
        ) from None
    verify(tmp, md5, url)
    os.replace(tmp, dest)


def verify(path: Path, md5: str, what: str) -> None:
    got = md5sum(path)
    if got != md5:
        path.unlink(missing_ok=True)
        raise UserError(f"{what}: checksum mismatch (md5 {got}, expected {md5}); the file was deleted, try again")


def fetch(name: str, home: Path) -> Path:
    """The folder holding the verified official files of a built-in dataset, downloading what is missing."""
    folder = home / "downloads" / name
    folder.mkdir(parents=True, exist_ok=True)
    for url, md5 in FILES[name]:
        dest = folder / url.rsplit("/", 1)[1]
        if dest.exists():
            verify(dest, md5, str(dest))  # present is not proof of correct
        else:
            download(url, dest, md5)
    if name == "cifar10":
        return _unpack_cifar(folder)
    return folder


def _unpack_cifar(folder: Path) -> Path:
    out = folder / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    if all((out / n).exists() for n in names):
        return out
    out.mkdir(exist_ok=True)
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "r:gz") as tar:
        for member in tar:  # only the known batch files, written by name: nothing else lands
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in names:
                tmp = out / (base + ".part")
                tmp.write_bytes(tar.extractfile(member).read())
                os.replace(tmp, out / base)
    return out
