"""Fetch the KITTI split lists of the Monodepth2 family and verify them against ``SHA256SUMS``.

    python splits/download_splits.py                                  # from GitHub
    python splits/download_splits.py --source ../shared/kitti_splits  # from a local copy (offline)

Every file listed in ``splits/SHA256SUMS`` (eigen, eigen_benchmark, eigen_zhou, eigen_full, odom,
benchmark, make3d lists and ``kitti_archives_to_download.txt``) is read from ``--source`` (a URL
base or a folder with the same layout), checked against its SHA-256 sum and only then written
into ``--dest`` (temp file + rename, so a file there is always complete and verified). Files
already present with the right sum are skipped. Exit code 2, with one ``error:`` line per
problem, when a file does not match its sum or the source cannot be read.

The lists are published under a non-commercial licence and are therefore not part of this
repository; see ``splits/README.md``.

This script only needs the Python standard library (and the repo's torch-free ``utils``).
"""

import argparse
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repo root: utils (standard library only)

from utils import atomic_write  # noqa: E402
DEFAULT_SOURCE = "https://raw.githubusercontent.com/nianticlabs/monodepth2/master/splits/"


class SourceUnreachable(Exception):
    """The source as a whole cannot be read (no network, bad host, missing folder)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE,
                        help="URL base (http, https or file) or local folder holding the lists in "
                             f"the Monodepth2 layout (default: {DEFAULT_SOURCE})")
    parser.add_argument("--dest", default=HERE,
                        help="folder to write the lists into (default: this splits/ folder)")
    parser.add_argument("--checksums", default=os.path.join(HERE, "SHA256SUMS"),
                        help="sha256sum-format file of the expected files (default: splits/SHA256SUMS)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each download")
    return parser.parse_args(argv)


def read_checksums(path):
    """``sha256sum`` output → list of (relative path, hex digest)."""
    entries = []
    with open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            digest, _, name = line.strip().partition("  ")
            name = name.lstrip("*")
            if len(digest) != 64 or not name:
                raise ValueError(f"{path} line {number} is not '<sha256>  <path>': {line.strip()!r}")
            entries.append((os.path.normpath(name).replace(os.sep, "/"), digest.lower()))
    return entries


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def is_url(source):
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file")


def fetch(source, relpath, timeout):
    """Bytes of ``relpath`` under ``source``.

    Raises:
        FileNotFoundError: the source is readable but has no such file.
        SourceUnreachable: the source itself cannot be read.
    """
    if not is_url(source):
        if not os.path.isdir(source):
            raise SourceUnreachable(f"source folder {source} does not exist")
        path = os.path.join(source, *relpath.split("/"))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist")
        with open(path, "rb") as f:
            return f.read()
    url = source.rstrip("/") + "/" + relpath
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise FileNotFoundError(f"{url} not found (HTTP 404)") from None
        raise SourceUnreachable(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, FileNotFoundError):
            raise FileNotFoundError(f"{url} does not exist") from None
        raise SourceUnreachable(f"cannot reach {url}: {reason}") from None


def write_atomic(path, data):
    """Write ``data`` to ``path`` through ``utils.atomic_write`` (temp file, fsync, rename)."""
    with atomic_write(path) as f:
        f.write(data)


def file_digest(path):
    with open(path, "rb") as f:
        return sha256_of(f.read())


def sync(source, dest, entries, timeout):
    """Fetch, verify and write every entry. Returns (fetched, present, errors)."""
    fetched, present, errors = [], [], []
    for relpath, expected in entries:
        path = os.path.join(dest, *relpath.split("/"))
        if os.path.isfile(path) and file_digest(path) == expected:
            present.append(relpath)
            continue
        try:
            data = fetch(source, relpath, timeout)
        except FileNotFoundError as e:
            errors.append(f"{relpath}: missing at the source ({e})")
            continue
        actual = sha256_of(data)
        if actual != expected:
            errors.append(f"{relpath}: checksum mismatch (expected {expected}, got {actual}) from "
                          f"{source}; not written")
            continue
        write_atomic(path, data)
        fetched.append(relpath)
    return fetched, present, errors


def main(argv=None):
    args = parse_args(argv)
    try:
        entries = read_checksums(args.checksums)
    except (OSError, ValueError) as e:
        print(f"error: cannot read the checksum list: {e}", file=sys.stderr)
        return 2
    try:
        fetched, present, errors = sync(args.source, args.dest, entries, args.timeout)
    except SourceUnreachable as e:
        hint = ("check the network, or pass --source with a local copy of the lists"
                if is_url(args.source) else "pass --source with a folder holding the lists")
        print(f"error: {e}; {hint}", file=sys.stderr)
        return 2
    print(f"{len(fetched)} fetched, {len(present)} already present and verified, "
          f"{len(errors)} failed (of {len(entries)} files in {os.path.abspath(args.dest)})")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
