"""Reading .zip, .tar, .tar.gz (.tgz, .tar.bz2, .tar.xz) archives in place, safely.

Images are read straight out of the archive (nothing is extracted, so nothing can land
outside a target). Every member is still checked before a byte is read: a name that is
absolute or climbs out with '..', or a link pointing outside the archive, refuses the
whole archive, because such an archive was made to attack whoever unpacks it. The number
of members and the total uncompressed size are capped (zip bombs); zip members are read
through their declared size, so a lying header cannot make us read more.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import zlib
import tarfile
import zipfile
from pathlib import Path

from ..errors import UserError

MAX_MEMBERS = 5_000_000  # members in one archive
MAX_TOTAL_BYTES = 64 * 2**30  # uncompressed bytes of all members together (64 GiB)
IN_MEMORY_BYTES = 2 * 2**30  # a tar is decompressed in memory up to this size, else streamed
MAX_RATIO = 1000  # a zip member that inflates more than this is a bomb
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _check_name(archive: Path, name: str) -> str:
    clean = name.replace("\\", "/")
    norm = posixpath.normpath(clean)
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":") or norm == ".." or norm.startswith("../"):
        raise UserError(
            f"{archive}: refused: member '{name}' would land outside the archive's folder "
            "(absolute path or '..'); this archive is unsafe, do not unpack it"
        )
    return norm


def _check_totals(archive: Path, n_members: int, total: int, max_members: int, max_bytes: int) -> None:
    if n_members > max_members:
        raise UserError(f"{archive}: refused: more than {max_members:,} members (a zip bomb or not a dataset)")
    if total > max_bytes:
        raise UserError(
            f"{archive}: refused: members add up to {total:,} bytes uncompressed, over the cap of "
            f"{max_bytes:,}; extract it yourself if you trust it and pass the folder"
        )


def iter_archive(path: Path, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_TOTAL_BYTES,
                 memory_limit: int = IN_MEMORY_BYTES):
    """Yield (name, bytes) for each regular file and (name, None) for each folder, in archive
    order, in one pass; unsafe names, links out and bombs raise UserError when met."""
    try:
        if path.name.lower().endswith(".zip"):
            yield from _iter_zip(path, max_members, max_bytes)
        else:
            yield from _iter_tar(path, max_members, max_bytes, memory_limit)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise UserError(f"{path}: not a readable archive, or damaged ({exc}); check the file is complete") from None


def _decompressed(path: Path, limit: int) -> bytes | None:
    """The whole uncompressed tar, when it fits in `limit` bytes; else None."""
    lower = path.name.lower()
    opener = (gzip.open if lower.endswith(("gz", ".tgz")) else bz2.open if lower.endswith(("bz2", ".tbz2"))
              else lzma.open if lower.endswith(("xz", ".txz")) else open)
    with opener(path, "rb") as f:
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


class _NotPlainTar(Exception):
    pass


def _plain_tar_members(raw: bytes) -> list[tuple[str, bytes, int, int]]:
    """(name, typeflag, data offset, size) of every member of a plain ustar tar in memory.

    Written by hand because tarfile's header parsing costs ~25 us a member on the reading
    thread, the one serial step of a cold decode (70,000 MNIST files: 1.6 s); this costs a
    quarter of that. Anything but regular files and folders in ustar headers (pax or GNU
    extensions, links, base-256 sizes, a bad checksum) raises, and tarfile reads the archive.
    """
    members, pos, end = [], 0, len(raw)
    pax: dict[bytes, bytes] = {}  # the next member's extended header (path, size)
    while pos + 512 <= end:
        header = raw[pos: pos + 512]
        if header.count(0) == 512:
            return members  # end-of-archive block
        typeflag = header[156:157]
        if header[257:262] != b"ustar" or typeflag not in (b"0", b"\0", b"5", b"x", b"g") or header[124] & 0x80:
            raise _NotPlainTar
        try:
            checksum, size = int(header[148:156].strip(b" \0") or b"0", 8), int(header[124:136].strip(b" \0") or b"0", 8)
        except ValueError:
            raise _NotPlainTar from None
        if checksum != sum(header) - sum(header[148:156]) + 256:  # the field itself counts as 8 spaces
            raise _NotPlainTar
        data_at, pos = pos + 512, pos + 512 + (size + 511) // 512 * 512
        if typeflag in (b"x", b"g"):
            records = _pax_records(raw[data_at: data_at + size])
            if typeflag == b"g" and records.keys() & {b"path", b"size", b"linkpath"}:
                raise _NotPlainTar  # a global path or size: rare enough to leave to tarfile
            pax = records if typeflag == b"x" else pax
            continue
        name, prefix = header[:100].split(b"\0", 1)[0], header[345:500].split(b"\0", 1)[0]
        name = pax.get(b"path", prefix + b"/" + name if prefix else name)
        if b"size" in pax:
            size = int(pax[b"size"])
            pos = data_at + (size + 511) // 512 * 512
        members.append((name.decode("utf-8", "surrogateescape"), typeflag, data_at, size))
        pax = {}
    if pos > end:
        raise _NotPlainTar  # truncated: let tarfile say what is wrong
    return members


def _pax_records(block: bytes) -> dict[bytes, bytes]:
    """'%d key=value\\n' records of a pax extended header."""
    records, i = {}, 0
    while i < len(block) and block[i] != 0:
        space = block.index(b" ", i)
        length = int(block[i:space])
        key, _, value = block[space + 1: i + length - 1].partition(b"=")
        records[key] = value
        i += length
    return records


def _iter_tar(path: Path, max_members: int, max_bytes: int, memory_limit: int):
    # An in-memory tar is parsed faster and its members are slices of one buffer; a tar over
    # the limit is streamed instead.
    raw = _decompressed(path, memory_limit)
    if raw is not None:
        try:
            members = _plain_tar_members(raw)
        except _NotPlainTar:
            members = None
        if members is not None:
            total = 0
            for count, (name, typeflag, offset, size) in enumerate(members, 1):
                name = _check_name(path, name)
                total += size if typeflag != b"5" else 0
                _check_totals(path, count, total, max_members, max_bytes)
                yield (name, None) if typeflag == b"5" else (name, raw[offset: offset + size])
            return
    tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r:") if raw is not None else tarfile.open(path, "r|*")
    total = count = 0
    with tar:
        for member in tar:
            count += 1
            name = _check_name(path, member.name)
            if member.issym() or member.islnk():
                target = member.linkname if member.islnk() else posixpath.join(posixpath.dirname(name), member.linkname)
                _check_name(path, target)
                continue  # links inside the archive are not followed: images must be files
            if member.isfile() and not member.issparse():
                total += member.size
            _check_totals(path, count, total, max_members, max_bytes)
            if member.isdir():
                yield name, None
            elif member.isfile() and not member.issparse():
                if raw is not None:
                    yield name, raw[member.offset_data: member.offset_data + member.size]
                else:
                    yield name, tar.extractfile(member).read(member.size)


def _iter_zip(path: Path, max_members: int, max_bytes: int):
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()  # the central directory: every check happens before any inflating
        _check_totals(path, len(infos), sum(i.file_size for i in infos), max_members, max_bytes)
        names = [_check_name(path, info.filename) for info in infos]
        for info in infos:
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
                raise UserError(
                    f"{path}: refused: member '{info.filename}' inflates {info.file_size / info.compress_size:.0f}x "
                    f"(over {MAX_RATIO}x): a zip bomb"
                )
        for name, info in zip(names, infos):
            if info.is_dir():
                yield name, None
            elif (info.external_attr >> 16) & 0o170000 != 0o120000:  # a stored symlink is not followed
                with zf.open(info) as f:  # stops at the declared size and checks the CRC
                    yield name, f.read(info.file_size)


def list_archive(path: Path, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_TOTAL_BYTES) -> list[str]:
    """Names of the regular files, after every safety check (reads the archive once)."""
    return [name for name, data in iter_archive(path, max_members, max_bytes) if data is not None]
