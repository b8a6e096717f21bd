"""data/make_tiny_shards.py writes real-format shards of a learnable language, and
data/cached_fineweb10B.py downloads, skips, resumes and verifies shards.

The network is the only stand-in: a local ThreadingHTTPServer on 127.0.0.1 serves shards written
by make_tiny_shards, honouring (or, when asked, ignoring) HTTP Range requests and recording every
request, and the real download script runs against it in a subprocess.
"""
import importlib.util
import io
import math
import socket
import subprocess
from pathlib import Path
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
DOWNLOAD_SCRIPT = DATA / "cached_fineweb10B.py"


def _import(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny = _import(DATA / "make_tiny_shards.py")
fineweb = _import(DOWNLOAD_SCRIPT)


def read_shard(path):
    raw = path.read_bytes()
    header = np.frombuffer(raw[:1024], dtype="<i4")
    return header, np.frombuffer(raw[1024:], dtype="<u2"), len(raw)


# ---------------------------------------------------------------- make_tiny_shards.py

def test_tiny_shards_have_the_real_format(tmp_path):
    assert tiny.main(["--out", str(tmp_path), "--train-shards", "3", "--tokens-per-shard", "5000",
                      "--vocab", "300"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fineweb_train_000001.bin", "fineweb_train_000002.bin",
                     "fineweb_train_000003.bin", "fineweb_val_000000.bin"]
    for name in names:
        header, tokens, size = read_shard(tmp_path / name)
        assert list(header[:3]) == [20240520, 1, 5000] and not header[3:].any()
        assert size == 1024 + 2 * 5000 and tokens.size == 5000
        assert tokens.max() < 300
    # The shards are different samples (val is not a copy of train).
    assert not np.array_equal(read_shard(tmp_path / names[0])[1], read_shard(tmp_path / names[3])[1])


def test_tiny_shards_are_deterministic_given_the_seed(tmp_path):
    for out, seed in [("a", 0), ("b", 0), ("c", 1)]:
        tiny.main(["--out", str(tmp_path / out), "--tokens-per-shard", "3000", "--seed", str(seed)])
    same = [(tmp_path / d / "fineweb_train_000002.bin").read_bytes() for d in "abc"]
    assert same[0] == same[1]
    assert same[0] != same[2]


def test_write_shard_round_trips_and_refuses_bad_arrays(tmp_path):
    tokens = np.array([0, 1, 65535, 42], dtype=np.int64)
    tiny.write_shard(tmp_path / "s.bin", tokens)
    header, back, size = read_shard(tmp_path / "s.bin")
    assert list(header[:3]) == [20240520, 1, 4] and size == 1032
    assert back.tolist() == [0, 1, 65535, 42]
    with pytest.raises(ValueError):
        tiny.write_shard(tmp_path / "bad.bin", np.zeros((2, 2), dtype=np.uint16))
    with pytest.raises(ValueError):
        tiny.write_shard(tmp_path / "bad.bin", np.array([65536]))


def test_tiny_language_is_learnable_down_to_its_stated_entropy_rate():
    vocab = 512
    tokens = tiny.generate_tokens(200_000, vocab=vocab, seed=3).astype(np.int64)
    assert tokens.max() < vocab
    pairs = np.bincount(tokens[:-1] * vocab + tokens[1:], minlength=vocab * vocab).reshape(vocab, vocab)
    # Each token has at most SUCCESSORS possible next tokens: the table is sparse.
    assert (pairs > 0).sum(axis=1).max() <= tiny.SUCCESSORS
    counts = pairs.sum(axis=1, keepdims=True)
    cond = pairs / np.maximum(counts, 1)
    bigram_entropy = -(pairs[pairs > 0] * np.log(cond[pairs > 0])).sum() / pairs.sum()
    unigram = np.bincount(tokens, minlength=vocab) / tokens.size
    unigram_entropy = -(unigram[unigram > 0] * np.log(unigram[unigram > 0])).sum()
    rate = tiny.entropy_rate()
    # The stated best loss is what the data shows (plug-in estimate, biased low by ~0.01 nats).
    assert abs(bigram_entropy - rate) < 0.05, (bigram_entropy, rate)
    # Far below a uniform guess, and context matters: the previous token is worth > 1 nat.
    assert rate < math.log(vocab) - 3
    assert unigram_entropy > bigram_entropy + 1.0


# ---------------------------------------------------------------- the local stand-in server

class ShardServer:
    """Serves {name: bytes} under /mirror/ on 127.0.0.1; records (name, Range header) requests."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []
        self.ignore_range = False
        self.break_once = set()       # names whose next response stops halfway and closes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.removeprefix("/mirror/")
                byte_range = self.headers.get("Range")
                outer.requests.append((name, byte_range))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                start = 0
                if byte_range and not outer.ignore_range:
                    start = int(byte_range.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                body = data[start:]
                if name in outer.break_once:
                    outer.break_once.discard(name)
                    body = body[:len(body) // 2]
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def remote(tmp_path):
    """Four tiny shards (val + 3 train) behind a local server."""
    source = tmp_path / "remote"
    tiny.main(["--out", str(source), "--train-shards", "3", "--tokens-per-shard", "20000"])
    server = ShardServer({p.name: p.read_bytes() for p in source.iterdir()})
    yield server
    server.close()


def run_download(server_url, dest, *args):
    return subprocess.run([sys.executable, str(DOWNLOAD_SCRIPT), *args, "--dir", str(dest),
                           "--base-url", server_url], capture_output=True, text=True, timeout=60)


def shard_list(n):
    return ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(1, n + 1)]


# ---------------------------------------------------------------- cached_fineweb10B.py

def test_fresh_download_is_byte_identical_and_a_rerun_skips_everything(remote, tmp_path):
    dest = tmp_path / "fineweb10B"
    result = run_download(remote.url, dest, "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(shard_list(2))   # no .part left
    for name in shard_list(2):
        assert (dest / name).read_bytes() == remote.files[name]
    assert [name for name, _ in remote.requests] == shard_list(2)
    assert "[3/3 files]" in result.stdout and "MB/s" in result.stdout

    remote.requests.clear()
    again = run_download(remote.url, dest, "3")            # one more shard than before
    assert again.returncode == 0, again.stderr
    assert remote.requests == [("fineweb_train_000003.bin", None)]
    assert again.stdout.count("skipped") == 3


def test_partial_download_is_resumed_with_a_range_request(remote, tmp_path):
    dest = tmp_path / "fineweb10B"
    dest.mkdir()
    name = "fineweb_val_000000.bin"
    (dest / (name + ".part")).write_bytes(remote.files[name][:12345])
    result = run_download(remote.url, dest, "0")
    assert result.returncode == 0, result.stderr
    assert remote.requests == [(name, "bytes=12345-")]
    assert (dest / name).read_bytes() == remote.files[name]
    assert not (dest / (name + ".part")).exists()


def test_server_ignoring_range_still_gives_a_correct_file(remote, tmp_path):
    dest = tmp_path / "fineweb10B"
    dest.mkdir()
    name = "fineweb_val_000000.bin"
    (dest / (name + ".part")).write_bytes(remote.files[name][:5000])
    remote.ignore_range = True
    result = run_download(remote.url, dest, "0")
    assert result.returncode == 0, result.stderr
    assert remote.requests == [(name, "bytes=5000-")]          # asked, got the whole file (200)
    assert (dest / name).read_bytes() == remote.files[name]


def test_broken_connection_is_retried_and_resumed(remote, tmp_path):
    dest = tmp_path / "fineweb10B"
    name = "fineweb_train_000001.bin"
    remote.break_once.add(name)
    result = run_download(remote.url, dest, "1")
    assert result.returncode == 0, result.stderr
    half = len(remote.files[name]) // 2
    assert remote.requests[1:] == [(name, None), (name, f"bytes={half}-")]
    assert "retrying" in result.stdout
    assert (dest / name).read_bytes() == remote.files[name]


def test_existing_corrupt_final_file_is_downloaded_again(remote, tmp_path):
    dest = tmp_path / "fineweb10B"
    dest.mkdir()
    name = "fineweb_val_000000.bin"
    (dest / name).write_bytes(remote.files[name][:-2])                # one token short
    result = run_download(remote.url, dest, "0")
    assert result.returncode == 0, result.stderr
    assert "downloading it again" in result.stdout
    assert (dest / name).read_bytes() == remote.files[name]


@pytest.mark.parametrize("damage, words", [("magic", "bad header"), ("size", "header promises")])
def test_corrupt_remote_file_is_refused_and_not_kept(remote, tmp_path, damage, words):
    bad = "fineweb_train_000002.bin"
    data = bytearray(remote.files[bad])
    if damage == "magic":
        data[0:4] = (12345).to_bytes(4, "little")
    else:
        data = data[:-100]                                        # body shorter than the header says
    remote.files[bad] = bytes(data)
    dest = tmp_path / "fineweb10B"
    result = run_download(remote.url, dest, "3")
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and bad in error[0] and words in error[0], result.stderr
    assert not (dest / bad).exists() and not (dest / (bad + ".part")).exists()
    # Files before it are complete and kept; the run stopped at the bad one.
    for name in ["fineweb_val_000000.bin", "fineweb_train_000001.bin"]:
        assert (dest / name).read_bytes() == remote.files[name]
    assert not (dest / "fineweb_train_000003.bin").exists()


def test_missing_remote_file_and_network_failure_are_one_clear_line(remote, tmp_path):
    del remote.files["fineweb_train_000001.bin"]
    result = run_download(remote.url, tmp_path / "a", "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "fineweb_train_000001.bin: HTTP 404" in result.stderr

    with socket.socket() as s:                     # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    result = run_download(f"http://127.0.0.1:{closed_port}", tmp_path / "b", "1", "--tries", "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "fineweb_val_000000.bin: download failed after 1 tries" in result.stderr
    assert "rerun the same command to resume" in result.stderr


def test_more_than_103_train_shards_is_refused(remote, tmp_path):
    result = run_download(remote.url, tmp_path / "fineweb10B", "104")
    assert result.returncode != 0 and "103" in result.stderr
    assert remote.requests == [] and not (tmp_path / "fineweb10B").exists()


def test_defaults_point_where_train_gpt_reads():
    assert fineweb.DEFAULT_DIR == DATA / "fineweb10B"
    assert fineweb.BASE_URL == "https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main"
    assert fineweb.shard_names(8)[-1] == "fineweb_train_000008.bin"
    # 8 shards of 100M tokens cover the seed's 1500 steps of 524,288 tokens; 27 cover 5100.
    assert 8e8 >= 1500 * 524_288 > 7e8 and 27e8 >= 5100 * 524_288 > 26e8


def test_progress_rewrites_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    progress = fineweb.Progress(2, stream=screen)
    time.sleep(0.25)                              # a terminal line is redrawn at most 5 times/s
    progress.update("fineweb_val_000000.bin", 3_000_000, 3_000_000, 6_000_000)
    progress.file_done("fineweb_val_000000.bin", "6.0 MB")
    text = screen.getvalue()
    assert text.startswith("\r[0/2 files] fineweb_val_000000.bin 3.0/6.0 MB") and "MB/s" in text
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r[1/2 files] fineweb_val_000000.bin: 6.0 MB" in text
