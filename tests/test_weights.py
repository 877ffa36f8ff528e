# Weights manager tests: downloads against a local HTTP server on 127.0.0.1 (Range support, corruption, cut streams),
# the real huggingface_hub client against the same server answering the Hub's resolve route, status/require on temp
# weights dirs, safe loading (pickled code refused), w̄ sources. No traffic leaves 127.0.0.1.
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from guide_core import weights as W
from guide_core.eg3d import io as eg3d_io
from guide_core.eg3d import mean_latent
from guide_core.weights import catalogue
from guide_core.__main__ import main as cli_main

PAYLOAD = bytes(range(256)) * 4096 + b"tail"          # ~1 MiB, not a multiple of the chunk size
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"   # the repository revision the fake Hub reports


# A local file server: per-path bytes and behaviour, HTTP Range, and a log of what each request asked and received.
# Every answer also carries the headers huggingface_hub reads from the Hub's `/{repo}/resolve/{revision}/{file}` route
# (X-Repo-Commit, ETag, Content-Length; never the Xet headers), so the real client can download from it too.
class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    # A 404, named like the Hub names a missing file on its resolve route.
    def _missing(self):
        # The Hub names the kind of 404 in X-Error-Code; huggingface_hub turns it into its own error types.
        self.send_response(404)
        if "/resolve/" in self.path:
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # The metadata request huggingface_hub makes before a download.
    def do_HEAD(self):
        server = self.server
        server.log.append({"method": "HEAD", "path": self.path, "range": None})
        spec = server.files.get(self.path.split("?")[0])
        if spec is None:
            self._missing()
            return
        self.send_response(200)
        self._file_headers(spec["data"])
        self.send_header("Content-Length", str(len(spec["data"])))
        self.end_headers()

    # The headers the Hub's resolve route sends for a regular (non-Xet) file.
    def _file_headers(self, data):
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')

    def do_GET(self):
        server = self.server
        spec = server.files.get(self.path.split("?")[0])
        if spec is None:
            server.log.append({"method": "GET", "path": self.path, "range": None})
            self._missing()
            return
        data, mode = spec["data"], spec.get("mode", "good")
        asked = self.headers.get("Range")
        server.log.append({"method": "GET", "path": self.path, "range": asked})
        start = 0
        if asked and mode != "ignore-range":
            start = int(re.match(r"bytes=(\d+)-", asked).group(1))
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
        body = data[start:]
        self._file_headers(data)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        if server.midstream is not None:
            server.midstream()
        if mode in ("cut", "cut-once"):
            # Promise the whole body, deliver half, hang up: what a dropped connection looks like.
            server.log[-1]["sent"] = half
            if mode == "cut-once":
                spec["mode"] = "good"
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body[half:])
        server.log[-1]["sent"] = len(body)


# The server in a thread on an ephemeral 127.0.0.1 port.
@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.log, httpd.midstream = {}, [], None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# A manifest of test entries and an empty temp weights dir; proxies bypassed so requests stay on 127.0.0.1.
@pytest.fixture
def wdir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    entries = {
        "known": {"file": "known.bin", "sha256": PAYLOAD_SHA, "feature": "test: known hash", "source": "test server"},
        "prefix": {"file": "prefix-" + PAYLOAD_SHA[:8] + ".bin", "sha256_prefix": PAYLOAD_SHA[:8],
                   "feature": "test: hash prefix", "source": "test server"},
        "unknown": {"file": "unknown.bin", "feature": "test: no hash", "source": "test server"},
        "sized": {"file": "sized.bin", "size": len(PAYLOAD) + 1, "feature": "test: wrong size", "source": "test"},
        "manual": {"file": "manual.pt", "feature": "test: no source", "source": "ask the authors"},
        "wbar": {"file": "wbar.pt", "w_avg_for": "tiny", "feature": "test: released w̄", "source": "test"},
    }
    monkeypatch.setattr(catalogue, "manifest", lambda: entries)
    return folder


def _serve(server, name, data=PAYLOAD, mode="good"):
    server.files[f"/{name}"] = {"data": data, "mode": mode}
    return f"{server.base}/{name}"


# ---------------------------------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------------------------------

def test_good_download_verifies_and_lands_atomically(server, wdir):
    url = _serve(server, "known.bin")
    target = wdir / "known.bin"
    part = target.with_name("known.bin.part")
    seen = []

    def midstream():
        # While bytes are still flowing, only the .part may exist: never a file that looks complete.
        deadline = time.monotonic() + 5
        while not part.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append((target.exists(), part.exists()))

    server.midstream = midstream
    path = W.fetch("known", url=url, progress=False)
    assert path == target and path.read_bytes() == PAYLOAD
    assert seen == [(False, True)]
    assert not target.with_name("known.bin.part").exists()
    assert W.verify("known")[0].verdict == "sha256"
    row = {r.name: r for r in W.status()}["known"]
    assert row.installed and row.size == len(PAYLOAD) and row.verified == "sha256"   # cached check, no re-hash


def test_corrupted_download_is_rejected_and_removed(server, wdir):
    bad = bytearray(PAYLOAD)
    bad[1000] ^= 0xFF
    url = _serve(server, "known.bin", bytes(bad))
    with pytest.raises(W.HashMismatchError, match="corrupt or not the expected file") as info:
        W.fetch("known", url=url, progress=False)
    assert PAYLOAD_SHA in str(info.value) or "sha256" in str(info.value)
    assert not (wdir / "known.bin").exists() and not (wdir / "known.bin.part").exists()
    assert not W.is_installed("known")


def test_wrong_size_is_rejected(server, wdir):
    url = _serve(server, "sized.bin")
    with pytest.raises(W.HashMismatchError, match="size"):
        W.fetch("sized", url=url, progress=False)
    assert list(wdir.glob("sized.bin*")) == []


def test_interrupted_download_leaves_only_part_and_resumes(server, wdir):
    url = _serve(server, "known.bin", mode="cut")
    with pytest.raises(W.FetchError, match="resume"):
        W.fetch("known", url=url, progress=False)
    part = wdir / "known.bin.part"
    assert not (wdir / "known.bin").exists(), "an interrupted download must not leave a complete-looking file"
    row = {r.name: r for r in W.status()}["known"]
    assert not row.installed and row.verified == "partial" and row.size == part.stat().st_size
    assert part.is_file() and 0 < part.stat().st_size < len(PAYLOAD)
    kept = part.stat().st_size
    assert PAYLOAD.startswith(part.read_bytes())

    server.files["/known.bin"]["mode"] = "good"
    W.fetch("known", url=url, progress=False)
    assert server.log[-1]["range"] == f"bytes={kept}-", "the retry must resume from the .part with a Range request"
    assert server.log[-1]["sent"] == len(PAYLOAD) - kept
    assert (wdir / "known.bin").read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, wdir):
    url = _serve(server, "known.bin", mode="ignore-range")
    (wdir / "known.bin.part").write_bytes(PAYLOAD[:5000])
    W.fetch("known", url=url, progress=False)
    assert (wdir / "known.bin").read_bytes() == PAYLOAD          # not PAYLOAD[:5000] + PAYLOAD


def test_complete_part_is_finished_without_refetching_bytes(server, wdir):
    url = _serve(server, "known.bin")
    (wdir / "known.bin.part").write_bytes(PAYLOAD)                # e.g. killed between download and rename
    W.fetch("known", url=url, progress=False)
    assert server.log[-1]["range"] == f"bytes={len(PAYLOAD)}-" and "sent" not in server.log[-1]   # 416, no body
    assert (wdir / "known.bin").read_bytes() == PAYLOAD


def test_hash_prefix_from_file_name(server, wdir):
    name = "prefix-" + PAYLOAD_SHA[:8] + ".bin"
    W.fetch("prefix", url=_serve(server, name), progress=False)
    assert W.verify("prefix")[0].verdict == "prefix"
    (wdir / name).write_bytes(b"x" + PAYLOAD[1:])
    assert W.verify("prefix")[0].verdict == "mismatch"


def test_unknown_hash_recorded_on_first_fetch_then_enforced(server, wdir):
    url = _serve(server, "unknown.bin")
    W.fetch("unknown", url=url, progress=False)
    record = json.loads((wdir / "hashes.json").read_text())["recorded"]["unknown"]
    assert record["sha256"] == PAYLOAD_SHA and record["size"] == len(PAYLOAD) and record["source"] == url
    assert W.verify("unknown")[0].verdict == "recorded"
    # Trust on first use: a different file offered later under the same name is refused.
    server.files["/unknown.bin"]["data"] = PAYLOAD[::-1]
    with pytest.raises(W.HashMismatchError):
        W.fetch("unknown", url=url, progress=False, force=True)
    assert (wdir / "unknown.bin").read_bytes() == PAYLOAD      # the good file stays in place


def test_source_from_environment_and_missing_source(server, wdir, monkeypatch):
    url = _serve(server, "manual.pt")
    with pytest.raises(W.NoSourceError, match="GUIDE_URL_MANUAL"):
        W.fetch("manual", progress=False)
    monkeypatch.setenv("GUIDE_URL_MANUAL", url)
    assert W.fetch("manual", progress=False).read_bytes() == PAYLOAD
    with pytest.raises(W.FetchError, match="http"):
        W.fetch("manual", url="file:///etc/passwd", progress=False, force=True)


# The real huggingface_hub client pointed at the local server: HF_ENDPOINT is read by guide_core.weights when it
# downloads; the client's import-time settings (offline flag, cache folder, implicit token) are set for this test.
@pytest.fixture
def hub(server, wdir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return server


# Serve bytes at the Hub's resolve route of repo/filename on the main branch.
def _serve_hub(server, repo, filename, data=PAYLOAD, mode="good"):
    server.files[f"/{repo}/resolve/main/{filename}"] = {"data": data, "mode": mode}


def test_hugging_face_download_with_the_real_client(hub, wdir):
    _serve_hub(hub, "someone/weights", "sub/known.bin")
    path = W.fetch("known", hf_repo="someone/weights", hf_filename="sub/known.bin", progress=False)
    assert path == wdir / "known.bin" and path.read_bytes() == PAYLOAD and W.verify("known")[0].verdict == "sha256"
    assert [(e["method"], e["path"]) for e in hub.log if e["path"] != "/"] == [
        ("HEAD", "/someone/weights/resolve/main/sub/known.bin"), ("GET", "/someone/weights/resolve/main/sub/known.bin")]
    assert [p.name for p in wdir.iterdir() if p.name.startswith((".hf-", ".incoming"))] == []
    assert not (wdir / "known.bin.part").exists()


def test_hugging_face_cut_stream_is_resumed_by_the_client(hub, wdir, monkeypatch):
    import huggingface_hub.constants as hf_constants

    # The client writes in chunks of DOWNLOAD_CHUNK_SIZE (10 MB): smaller chunks let a 1 MB test file be cut mid-way.
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)
    _serve_hub(hub, "someone/weights", "known.bin", mode="cut-once")
    assert W.fetch("known", hf_repo="someone/weights", progress=False).read_bytes() == PAYLOAD
    gets = [e for e in hub.log if e["method"] == "GET" and e["path"] != "/"]
    assert len(gets) == 2 and gets[0]["range"] is None and gets[0]["sent"] < len(PAYLOAD)
    resumed_at = int(re.match(r"bytes=(\d+)-$", gets[1]["range"]).group(1))
    assert 0 < resumed_at <= gets[0]["sent"] and gets[1]["sent"] == len(PAYLOAD) - resumed_at


def test_hugging_face_wrong_bytes_are_rejected_and_removed(hub, wdir):
    _serve_hub(hub, "someone/weights", "known.bin", data=PAYLOAD[::-1])
    with pytest.raises(W.HashMismatchError, match="corrupt or not the expected file"):
        W.fetch("known", hf_repo="someone/weights", progress=False)
    assert sorted(p.name for p in wdir.iterdir()) == []


def test_hugging_face_missing_file_and_unreachable_hub(hub, wdir, monkeypatch):
    with pytest.raises(W.FetchError, match="someone/weights on http://127.0.0.1:\\d+ has no file known.bin") as info:
        W.fetch("known", hf_repo="someone/weights", progress=False)
    assert not isinstance(info.value, W.OfflineError) and "\n" not in str(info.value)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(W.OfflineError, match="cannot reach the Hugging Face Hub at http://127.0.0.1") as info:
        W.fetch("known", hf_repo="someone/weights", progress=False)
    assert "\n" not in str(info.value) and list(wdir.iterdir()) == []


# A local port with nothing listening: connecting to it fails at once, like a machine without network.
def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------------
# Status, require, CLI (the real manifest, a temp weights dir)
# ---------------------------------------------------------------------------------------------------------------------

def test_status_on_empty_dir_reports_every_download_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path))
    rows = {r.name: r for r in W.status()}
    expected = {"eg3d-ffhq", "eg3d-ffhq-rebalanced", "eg3d-afhq", "goae", "ir_se50", "curricularface", "vgg16",
                "inception", "default"}
    assert expected <= set(rows)
    for name, row in rows.items():
        if not row.shipped:
            assert not row.installed and row.verified == "missing" and row.file in row.hint, name
    assert rows["eg3d-ffhq"].file == "ffhq512-128.pkl" and rows["vgg16"].file == "vgg16-397923af.pth"

    (tmp_path / "vgg16-397923af.pth").write_bytes(b"not vgg")
    row = {r.name: r for r in W.status()}["vgg16"]
    assert row.installed and row.size == 7 and row.verified == "unchecked"
    assert W.verify("vgg16")[0].verdict == "mismatch"                    # the file-name hash prefix catches it
    assert {r.name: r for r in W.status()}["vgg16"].verified == "mismatch"
    assert sum(r.installed for r in W.status() if not r.shipped) == 1


def test_shipped_default_world_needs_its_files(tmp_path, monkeypatch):
    monkeypatch.setattr(catalogue, "SHIPPED_ROOT", tmp_path)
    folder = tmp_path / "default"
    assert W.path_of("default") == folder and not W.is_installed("default")
    folder.mkdir()
    required = W.entry("default")["files"]
    assert "generator.safetensors" in required
    for name in required[:-1]:
        (folder / name).write_bytes(b"x")
    assert not W.is_installed("default")                        # one required file still absent
    with pytest.raises(W.MissingWeightsError, match=f"lacks {re.escape(required[-1])}"):
        W.require("default")
    (folder / required[-1]).write_bytes(b"x")
    assert W.is_installed("default") and W.require("default") == folder
    row = {r.name: r for r in W.status()}["default"]
    assert row.installed and row.verified == "shipped" and row.size == len(required)
    with pytest.raises(W.FetchError, match="ships with the repository"):
        W.fetch("default", progress=False)


def test_require_names_file_place_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(W.MissingWeightsError) as info:
        W.require("goae")
    text = str(info.value)
    assert "encoder_FFHQ.pt" in text and str(tmp_path / "encoder_FFHQ.pt") in text
    assert "python -m guide_core weights fetch goae" in text
    with pytest.raises(W.MissingWeightsError, match="python -m guide_core weights fetch vgg16"):
        W.require("vgg16")
    with pytest.raises(W.UnknownWeightsError, match="known names: .*eg3d-ffhq"):
        W.require("eg3d-ffhq-typo")
    (tmp_path / "encoder_FFHQ.pt").write_bytes(b"x")
    assert W.require("goae") == tmp_path / "encoder_FFHQ.pt"


def test_cli_exit_codes_and_offline_listing(tmp_path, monkeypatch, capsys, server):
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert cli_main(["weights", "status"]) == 1                         # something is missing
    out = capsys.readouterr().out
    assert "ffhq512-128.pkl" in out and "missing" in out and "python -m guide_core weights fetch eg3d-ffhq" in out
    assert cli_main(["weights", "status", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows if not r["installed"]} >= {"goae", "vgg16"}
    assert cli_main(["weights", "fetch", "nope"]) == 2
    assert "known names" in capsys.readouterr().err
    monkeypatch.setenv("GUIDE_SOURCES", "url")                          # GOAE is on Google Drive only: no URL source
    assert cli_main(["weights", "fetch", "goae"]) == 2
    err = capsys.readouterr().err
    assert "no download source known for 'goae'" in err and "GUIDE_SOURCES" in err
    monkeypatch.delenv("GUIDE_SOURCES")
    assert cli_main(["weights", "path", "goae"]) == 1
    url = _serve(server, "encoder_FFHQ.pt")
    assert cli_main(["weights", "fetch", "goae", "--url", url]) == 0
    assert (tmp_path / "encoder_FFHQ.pt").read_bytes() == PAYLOAD
    capsys.readouterr()
    assert cli_main(["weights", "verify", "goae"]) == 0
    assert "recorded" in capsys.readouterr().out
    (tmp_path / "encoder_FFHQ.pt").write_bytes(b"tampered")
    assert cli_main(["weights", "verify"]) == 1
    # A file placed by hand has no reference until it is pinned with --record; then tampering is caught.
    (tmp_path / "model_ir_se50.pth").write_bytes(b"by hand")
    assert W.verify("ir_se50")[0].verdict == "no reference"
    assert cli_main(["weights", "verify", "ir_se50", "--record"]) == 0
    assert W.verify("ir_se50")[0].verdict == "recorded"
    (tmp_path / "model_ir_se50.pth").write_bytes(b"by hanD")
    assert cli_main(["weights", "verify", "ir_se50"]) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Safe loaders
# ---------------------------------------------------------------------------------------------------------------------

class _Exploit:
    """Pickles to a call of os.system: the classic malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_torch_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _Exploit(marker)}, path)
    with pytest.raises(W.UnsafeCheckpointError, match="never runs") as info:
        W.load_torch_state_dict(path)
    assert "posix.system" in str(info.value) and "weights_only` set to `False`" not in str(info.value)
    with pytest.raises(W.UnsafeCheckpointError):
        W.load_torch(path)
    assert not marker.exists(), "loading must not execute code stored in the checkpoint"


def test_state_dict_loader_checks_structure(tmp_path):
    good = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2)}
    torch.save(good, tmp_path / "good.pt")
    loaded = W.load_torch_state_dict(tmp_path / "good.pt")
    assert loaded.keys() == good.keys() and torch.equal(loaded["a.weight"], good["a.weight"])
    torch.save({"state_dict": good, "epoch": 3}, tmp_path / "wrapped.pt")
    with pytest.raises(W.UnsafeCheckpointError, match="key='state_dict'"):
        W.load_torch_state_dict(tmp_path / "wrapped.pt")
    assert W.load_torch_state_dict(tmp_path / "wrapped.pt", key="state_dict").keys() == good.keys()
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(W.UnsafeCheckpointError, match="not a state_dict"):
        W.load_torch_state_dict(tmp_path / "list.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:100])
    with pytest.raises(W.UnsafeCheckpointError):
        W.load_torch_state_dict(tmp_path / "trunc.pt")
    with pytest.raises(FileNotFoundError):
        W.load_torch_state_dict(tmp_path / "absent.pt")


def test_safetensors_loader_returns_json_metadata(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.arange(4.0)}, str(tmp_path / "m.safetensors"),
              metadata={"config": json.dumps({"z_dim": 512, "c": [1, 2]}), "note": "plain text"})
    tensors, meta = W.load_safetensors(tmp_path / "m.safetensors")
    assert torch.equal(tensors["x"], torch.arange(4.0))
    assert meta == {"config": {"z_dim": 512, "c": [1, 2]}, "note": "plain text"}
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(W.UnsafeCheckpointError, match="not a valid .safetensors"):
        W.load_safetensors(tmp_path / "bad.safetensors")


def test_npy_loader_refuses_pickled_objects(tmp_path):
    import numpy as np

    np.save(tmp_path / "feat.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert W.load_npy(tmp_path / "feat.npy").shape == (2, 3)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(W.UnsafeCheckpointError, match="pickled"):
        W.load_npy(tmp_path / "obj.npy")


def test_load_generator_resolves_names_and_reports_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(W.MissingWeightsError, match="ffhqrebalanced512-128.pkl"):
        eg3d_io.load_generator("eg3d-ffhq-rebalanced")
    with pytest.raises(FileNotFoundError, match="known names"):
        eg3d_io.load_generator(tmp_path / "nothing.safetensors")
    # Delegation to the EG3D file reader with the resolved path (a stand-in reader: this test is about resolving).
    calls = []
    monkeypatch.setattr(eg3d_io, "load_generator_file", lambda path, device: calls.append((Path(path), device)) or "G")
    (tmp_path / "ffhqrebalanced512-128.pkl").write_bytes(b"x")
    assert eg3d_io.load_generator("eg3d-ffhq-rebalanced", device="cuda:1") == "G"
    assert eg3d_io.load_generator(str(tmp_path / "ffhqrebalanced512-128.pkl")) == "G"
    assert calls == [(tmp_path / "ffhqrebalanced512-128.pkl", "cuda:1"), (tmp_path / "ffhqrebalanced512-128.pkl", "cpu")]


# ---------------------------------------------------------------------------------------------------------------------
# w̄
# ---------------------------------------------------------------------------------------------------------------------

class _Mapping(torch.nn.Module):
    """A tiny affine 'mapping network' with the original's attributes (num_ws, w_dim, w_avg buffer)."""

    def __init__(self, z_dim=8, w_dim=6, num_ws=3):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.fc = torch.nn.Linear(z_dim + 25, w_dim)
        torch.nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(1))
        torch.nn.init.constant_(self.fc.bias, 0.5)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
        w = self.fc(torch.cat([z, c], dim=1))
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)


class _TinyG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.mapping = _Mapping()
        self.z_dim = 8
        self.calls = 0

    def mapping(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
        self.calls += 1
        return self.backbone.mapping(z, c, truncation_psi, truncation_cutoff)


def test_w_avg_sources_and_cache(wdir, monkeypatch):
    G = _TinyG()
    c = torch.zeros(1, 25)
    monkeypatch.setattr(mean_latent, "conditioning_camera", lambda G: c)  # keeps this test independent of EG3D cameras
    value, source = mean_latent.w_avg_with_source(G, "tiny", n=4000, seed=3)
    assert source.startswith("samples") and value.shape == (3, 6)
    # The mean of a linear map of z ~ N(0, I) is the map at z = 0: the bias (+ the camera term, zero here).
    err = (value - 0.5).abs().max().item()
    assert err < 0.15, f"w̄ from samples off by {err:.3f}"
    # Batching does not matter.
    assert torch.allclose(value, mean_latent.mean_of_mapping(G, n=4000, seed=3, c=c, batch=333))
    cache = wdir / "cache" / "tiny-w_avg.safetensors"
    assert cache.is_file()
    calls = G.calls
    again, source = mean_latent.w_avg_with_source(G, "tiny", n=4000, seed=3)
    assert source.startswith("cache") and torch.equal(again, value) and G.calls == calls
    with torch.no_grad():
        G.backbone.mapping.fc.bias.add_(1.0)                      # a different generator: the cache must not be reused
    moved, source = mean_latent.w_avg_with_source(G, "tiny", n=4000, seed=3)
    assert source.startswith("samples") and (moved - value - 1.0).abs().max() < 1e-4

    _, source = mean_latent.w_avg_with_source(G, "/some/dir/my gen.pkl", n=10, seed=0)   # a path as the name
    assert (wdir / "cache" / "some_dir_my_gen.pkl-w_avg.safetensors").is_file()

    G.backbone.mapping.w_avg.copy_(torch.arange(6.0))            # a trained running mean is used as is
    value, source = mean_latent.w_avg_with_source(G, "tiny")
    assert source == "buffer" and torch.equal(value, torch.arange(6.0).expand(3, 6))

    torch.save(torch.full((3, 6), 7.0), wdir / "wbar.pt")        # the released file wins over the buffer
    value, source = mean_latent.w_avg_with_source(G, "tiny")
    assert source.startswith("file") and torch.equal(value, torch.full((3, 6), 7.0))
    torch.save(torch.zeros(5, 6), wdir / "wbar.pt")
    with pytest.raises(W.WeightsError, match="shape"):
        mean_latent.w_avg(G, "tiny")
    with pytest.raises(ValueError, match="source"):
        mean_latent.w_avg(G, "tiny", source="guess")


def test_w_avg_of_the_eg3d_fixture_generator(fixtures_dir, tmp_path, monkeypatch):
    pytest.importorskip("guide_core.eg3d.triplane", reason="guide_core.eg3d not available")
    from safetensors.torch import load_file

    from guide_core.eg3d import TriPlaneGenerator, camera_params

    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path))
    config = json.loads((fixtures_dir / "eg3d" / "config.json").read_text())
    G = TriPlaneGenerator(**config["init_kwargs"]).eval()
    state = load_file(str(fixtures_dir / "eg3d" / "state_dict.safetensors"))
    G.load_state_dict(state)
    # GUIDE's scripts ask rendering_kwargs for 'avg_cam_pivot', which the released configuration names
    # 'avg_camera_pivot': the conditioning camera therefore looks at the origin.
    c = mean_latent.conditioning_camera(G)
    assert torch.allclose(c, camera_params(0.0, 0.0, radius=2.7, pivot=(0, 0, 0)))
    original = G.rendering_kwargs
    G.rendering_kwargs = dict(original, avg_cam_pivot=[0, 0, 0.2], avg_cam_radius=3.0)   # the keys the scripts read
    assert torch.allclose(mean_latent.conditioning_camera(G), camera_params(0.0, 0.0, radius=3.0, pivot=(0, 0, 0.2)))
    G.rendering_kwargs = original
    value, source = mean_latent.w_avg_with_source(G, "fixture")
    assert source == "buffer" and torch.equal(value[3], state["backbone.mapping.w_avg"])
    num_ws = G.backbone.mapping.num_ws
    sampled, source = mean_latent.w_avg_with_source(G, "fixture", n=64, source="samples")
    z = torch.randn(64, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = G.mapping(z, c.expand(64, -1)).mean(dim=0)
    err = (sampled - expected).abs().max().item()
    assert source.startswith("samples") and sampled.shape == (num_ws, 512) and err < 1e-5, f"max |error| {err:.2e}"


def test_load_generator_end_to_end_with_eg3d_io(fixtures_dir, tmp_path, monkeypatch):
    pytest.importorskip("guide_core.eg3d.io", reason="guide_core.eg3d.io not available")
    from safetensors.torch import load_file

    from guide_core.eg3d import TriPlaneGenerator
    from guide_core.eg3d.io import save_generator

    config = json.loads((fixtures_dir / "eg3d" / "config.json").read_text())
    G = TriPlaneGenerator(**config["init_kwargs"])
    G.neural_rendering_resolution = config["neural_rendering_resolution"]
    G.load_state_dict(load_file(str(fixtures_dir / "eg3d" / "state_dict.safetensors")))
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(catalogue, "manifest", lambda: {"tiny-eg3d": {"file": "tiny.safetensors", "source": "test"}})
    save_generator(G, tmp_path / "tiny.safetensors")
    loaded = eg3d_io.load_generator("tiny-eg3d")
    assert not loaded.training and loaded.neural_rendering_resolution == G.neural_rendering_resolution
    for key, value in G.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    c = mean_latent.conditioning_camera(G).expand(2, -1)
    with torch.no_grad():
        err = (loaded.mapping(z, c) - G.eval().mapping(z, c)).abs().max().item()
    assert err == 0.0, f"mapping after load_generator differs by {err:.2e}"
