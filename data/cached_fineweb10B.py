"""Download FineWeb-10B in GPT-2 tokens (the shards train_gpt.py reads) into data/fineweb10B/.

    python data/cached_fineweb10B.py        # val shard + 8 train shards: enough for 1500 steps
    python data/cached_fineweb10B.py 27     # + 27 train shards: the record's 5100 steps

Fetches fineweb_val_000000.bin and fineweb_train_000001.bin .. fineweb_train_{N:06d}.bin from
the Hugging Face dataset repo kjj0/fineweb10B-gpt2 (103 training shards exist, each 100M
tokens, 200,001,024 bytes). A run of S steps reads S x 524,288 tokens, so it needs
ceil(S x 524,288 / 100M) shards; with fewer, train_gpt.py wraps around and warns.

Safe to rerun: complete files (valid header, size = 1024 + 2 x token count) are skipped; a
partial download (<name>.part) is resumed with an HTTP Range request (restarted from zero if
the server ignores Range) and renamed to <name> only once complete and valid. Every file's
header and size are checked. Standard library only.
"""
import argparse
import http.client
import os
import struct
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE_URL = "https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main"
DEFAULT_DIR = Path(__file__).resolve().parent / "fineweb10B"
DEFAULT_TRAIN_SHARDS = 8         # 1500 steps x 524,288 tokens = 786M tokens
MAX_TRAIN_SHARDS = 103           # fineweb_train_000001.bin .. fineweb_train_000103.bin
SHARD_MAGIC, SHARD_VERSION = 20240520, 1
HEADER_BYTES = 256 * 4           # 256 little-endian int32: magic, version, token count, zeros
TOKENS_PER_STEP = 512 * 1024     # the record's global batch, for the "enough for" hint
TRIES = 5                        # attempts per file before giving up (each resumes the .part)
TIMEOUT_S = 60                   # socket timeout per request / read
CHUNK_BYTES = 1 << 20
PROGRESS_EVERY_S = 5.0           # progress line interval when stdout is not a terminal


class DownloadError(Exception):
    """A failure the user must act on; str() is the one-line message."""


class TransientError(Exception):
    """A failure worth retrying (network, 5xx, short read): the .part is kept for resuming."""


def shard_names(n_train: int) -> list[str]:
    return ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(1, n_train + 1)]


def check_header(name: str, header: bytes) -> int:
    """The token count of a shard header; DownloadError naming the file if it is not a shard."""
    if len(header) < HEADER_BYTES:
        raise DownloadError(f"{name}: only {len(header)} bytes, shorter than the {HEADER_BYTES}-byte "
                            f"shard header; check that --base-url points at the shard folder")
    magic, version, n_tokens = struct.unpack("<3i", header[:12])
    if magic != SHARD_MAGIC or version != SHARD_VERSION:
        raise DownloadError(f"{name}: bad header (magic {magic}, version {version}; expected magic "
                            f"{SHARD_MAGIC}, version {SHARD_VERSION}): not a token shard; check that "
                            f"--base-url points at the shard folder")
    if n_tokens < 0:
        raise DownloadError(f"{name}: bad header (negative token count {n_tokens}): not a token shard")
    return n_tokens


def expected_size(name: str, path: Path) -> int:
    with open(path, "rb") as f:
        return HEADER_BYTES + 2 * check_header(name, f.read(HEADER_BYTES))


def is_complete(name: str, path: Path) -> bool:
    """True if path is a whole, valid shard (header valid and size == 1024 + 2 x token count)."""
    try:
        return path.stat().st_size == expected_size(name, path)
    except (OSError, DownloadError):
        return False


class Progress:
    """Bytes and files done, and the rate: one rewritten line on a terminal, else a line every
    PROGRESS_EVERY_S seconds (and one per finished file)."""

    def __init__(self, n_files: int, stream=sys.stdout):
        self.n_files, self.files_done, self.stream = n_files, 0, stream
        self.tty = stream.isatty()
        self.bytes_done = 0                  # downloaded in this run, all files
        self.start = self.last_print = time.monotonic()
        self.width = 0

    def _line(self, name: str, have: int, total: int | None) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        of_total = f"/{total / 1e6:,.1f}" if total else ""
        return (f"[{self.files_done}/{self.n_files} files] {name} {have / 1e6:,.1f}{of_total} MB | "
                f"{self.bytes_done / 1e6:,.1f} MB this run, {self.bytes_done / 1e6 / elapsed:.1f} MB/s")

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            pad = " " * max(self.width - len(text), 0)
            self.width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            if final:
                self.width = 0
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, name: str, new_bytes: int, have: int, total: int | None) -> None:
        self.bytes_done += new_bytes
        now = time.monotonic()
        if now - self.last_print >= (0.2 if self.tty else PROGRESS_EVERY_S):
            self.last_print = now
            self._write(self._line(name, have, total), final=False)

    def file_done(self, name: str, message: str) -> None:
        self.files_done += 1
        self._write(f"[{self.files_done}/{self.n_files} files] {name}: {message}", final=True)

    def end_line(self) -> None:
        """Finish a half-written terminal line before an error or warning is printed."""
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _open(url: str, offset: int):
    request = urllib.request.Request(url, headers={"User-Agent": "mlp-ablations-data/1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def fetch_once(name: str, url: str, part: Path, progress: Progress) -> None:
    """One attempt to complete `part` from `url`, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    if offset >= HEADER_BYTES:
        try:
            expected_size(name, part)
        except DownloadError:                # a .part that is not the start of a shard
            print(f"{name}: {part.name} does not start with a shard header; restarting it", flush=True)
            part.unlink()
            offset = 0
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:         # nothing past our end: the .part is whole, or too long
            if is_complete(name, part):
                return
            part.unlink()
            raise TransientError(f"HTTP 416 for a {offset:,}-byte partial file; restarting it") from e
        if e.code in (408, 429) or e.code >= 500:
            raise TransientError(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(f"{name}: HTTP {e.code} {e.reason} from {url}; check --base-url and "
                            f"that the file exists (at most {MAX_TRAIN_SHARDS} train shards)") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise TransientError(getattr(e, "reason", None) or repr(e)) from e
    with response:
        if offset and response.status != 206:    # Range ignored: the body is the whole file
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            have = offset
            checked = False
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as e:    # reset, timeout
                    raise TransientError(f"connection broken at byte {have}: {e!r}") from e
                if not chunk:
                    break
                f.write(chunk)
                have += len(chunk)
                progress.update(name, len(chunk), have, total)
                if not checked and have >= HEADER_BYTES:
                    # Refuse a non-shard (or a file of the wrong size) before fetching all of it.
                    f.flush()
                    size = expected_size(name, part)
                    if total is not None and total != size:
                        raise DownloadError(f"{name}: server says {total:,} bytes but its header "
                                            f"promises {size:,}: the remote file is corrupt; rerun "
                                            f"later or use another --base-url")
                    checked = True
        if total is not None and have < total:
            raise TransientError(f"connection closed at byte {have:,} of {total:,}")


def download(name: str, url: str, dest: Path, progress: Progress, tries: int) -> str:
    """Make dest a complete valid shard; returns what was done, for the progress line."""
    part = dest.with_name(dest.name + ".part")
    resumed = part.exists() and part.stat().st_size > 0
    for attempt in range(1, tries + 1):
        try:
            fetch_once(name, url, part, progress)
            break
        except TransientError as e:
            if attempt == tries:
                progress.end_line()
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"{name}: download failed after {tries} tries ({e}); "
                                    f"{kept:,} bytes kept in {part}: rerun the same command to "
                                    f"resume") from None
            delay = min(2 ** (attempt - 1), 30)
            progress.end_line()
            print(f"{name}: {e}; retrying in {delay}s (try {attempt + 1} of {tries})", flush=True)
            time.sleep(delay)
        except DownloadError:
            part.unlink(missing_ok=True)     # a corrupt remote file: keep nothing of it
            raise
    try:
        size, want = part.stat().st_size, expected_size(name, part)
    except (OSError, DownloadError) as e:
        part.unlink(missing_ok=True)
        raise DownloadError(str(e) if isinstance(e, DownloadError) else f"{name}: {e}") from None
    if size != want:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{name}: downloaded {size:,} bytes but its header promises {want:,} "
                            f"(1024 + 2 x token count): the remote file is corrupt or truncated; "
                            f"rerun, and report it if it persists")
    os.replace(part, dest)
    return f"{'resumed, ' if resumed else ''}{size / 1e6:,.1f} MB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Download FineWeb-10B GPT-2 token shards (val + N train) for train_gpt.py.")
    parser.add_argument("n", nargs="?", type=int, default=DEFAULT_TRAIN_SHARDS,
                        help=f"number of training shards, 0..{MAX_TRAIN_SHARDS} (default "
                             f"{DEFAULT_TRAIN_SHARDS}: enough for 1500 steps; 27 for 5100)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"where to put the shards (default {DEFAULT_DIR})")
    parser.add_argument("--base-url", default=BASE_URL,
                        help="URL of the folder holding the shards (a mirror; default: Hugging Face)")
    parser.add_argument("--tries", type=int, default=TRIES, help="attempts per file on network errors")
    args = parser.parse_args(argv)
    if not 0 <= args.n <= MAX_TRAIN_SHARDS:
        parser.error(f"N must be 0..{MAX_TRAIN_SHARDS}: kjj0/fineweb10B-gpt2 has only "
                     f"{MAX_TRAIN_SHARDS} training shards (got {args.n})")
    if args.tries < 1:
        parser.error("--tries must be at least 1")

    names = shard_names(args.n)
    steps = args.n * 100_000_000 // TOKENS_PER_STEP     # 100M tokens per train shard
    print(f"{len(names)} files (val + {args.n} train shards: ~{steps:,} steps of {TOKENS_PER_STEP:,} "
          f"tokens before the loader wraps) into {args.dir}", flush=True)
    args.dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(names))
    downloaded = 0
    try:
        for name in names:
            dest = args.dir / name
            if dest.exists():
                if is_complete(name, dest):
                    progress.file_done(name, "already complete, skipped")
                    continue
                # A final file that is short or corrupt: fetch it again through a .part.
                progress.end_line()
                print(f"{name}: existing file is incomplete or corrupt; downloading it again", flush=True)
                dest.unlink()
            message = download(name, f"{args.base_url.rstrip('/')}/{name}", dest, progress, args.tries)
            downloaded += 1
            progress.file_done(name, message)
    except DownloadError as e:
        progress.end_line()
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:                     # writing: disk full, permissions
        progress.end_line()
        print(f"error: {e}; free some space or choose another folder with --dir", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.end_line()
        print("interrupted: partial data kept as .part; rerun the same command to resume", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - progress.start
    print(f"done: {len(names)} files in {args.dir} ({downloaded} downloaded, "
          f"{len(names) - downloaded} already there), {progress.bytes_done / 1e9:.2f} GB in "
          f"{elapsed:.0f}s ({progress.bytes_done / 1e6 / max(elapsed, 1e-9):.1f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
