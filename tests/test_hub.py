# Sources, fetch --all and publish against a local emulation of the Hugging Face Hub on 127.0.0.1, driven by the real
# clients: huggingface_hub (hf_hub_download, HfApi.create_repo / create_commit) and gdown (download with resume).
# The emulation answers the routes those clients call: HEAD/GET /{repo}/resolve/{revision}/{file} (Range, ETag,
# X-Repo-Commit, X-Error-Code; never the Xet headers), POST /api/repos/create, /api/validate-yaml,
# /api/models/{repo}/preupload/{revision} (always "regular" upload mode) and /api/models/{repo}/commit/{revision}
# (ndjson, base64 files), plus plain files under /files/. Google Drive's folder listing cannot be served locally (gdown
# asks drive.google.com itself), so only the selection from a listing is tested here. No traffic leaves 127.0.0.1.
from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.util
import inspect
import json
import re
import sys
import threading
import types
import urllib.parse
from pathlib import Path

import pytest
import torch

from guide_core import registry, released, testing
from guide_core import weights as W
from guide_core.eg3d import io as eg3d_io
from guide_core.weights import catalogue, sources, transports
from guide_core.__main__ import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
HOST_REPO = "me/guide-weights"


# ---------------------------------------------------------------------------------------------------------------------
# The local Hub
# ---------------------------------------------------------------------------------------------------------------------

# One request to the local Hub; the server object holds repos, plain files, cut-once paths and the request log.
class _HubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    # A complete answer with a body (none for HEAD).
    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    # A JSON answer.
    def _json(self, status: int, payload, headers: dict | None = None):
        self._reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    # Log the request (method, path, Range, Authorization) and return its decoded path.
    def _record(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.log.append({"method": self.command, "path": path, "range": self.headers.get("Range"),
                                "auth": self.headers.get("Authorization")})
        return path

    # The bytes behind a GET/HEAD path, or the 404 the Hub would send (with its X-Error-Code).
    def _lookup(self, path: str):
        found = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if found:
            repo, _, filename = found.groups()
            if repo not in self.server.repos:
                self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return None
            if filename not in self.server.repos[repo]:
                self._json(404, {"error": "Entry not found"},
                           {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                return None
            return self.server.repos[repo][filename]
        if path in self.server.files:
            return self.server.files[path]
        self._reply(404)
        return None

    # The metadata request huggingface_hub makes before a download; "/" answers the reachability probe.
    def do_HEAD(self):
        path = self._record()
        if path == "/":
            self._reply(200)
            return
        data = self._lookup(path)
        if data is not None:
            self._reply(200, data, self._file_headers(data))

    # The headers the Hub's resolve route sends for a regular (non-Xet) file.
    def _file_headers(self, data: bytes) -> dict:
        return {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "X-Repo-Commit": COMMIT,
                "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}

    # File bytes, from a Range offset when asked; a cut-once path delivers half and hangs up the first time.
    def do_GET(self):
        path = self._record()
        data = self._lookup(path)
        if data is None:
            return
        start, status, headers = 0, 200, self._file_headers(data)
        asked = self.headers.get("Range")
        if asked:
            start = int(re.match(r"bytes=(\d+)-", asked).group(1))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in self.server.cut_once:
            # Promise the whole body, deliver half, hang up: a dropped connection.
            self.server.cut_once.discard(path)
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.server.log[-1]["sent"] = len(body) // 2
            self.close_connection = True
            self.connection.shutdown(2)
            return
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):   # gdown drops its first answer when it resumes with Range
            return
        self.server.log[-1]["sent"] = len(body)

    # The upload API: repo create (409 with the URL when it exists), YAML check, preupload ("regular"), ndjson commit.
    def do_POST(self):
        path = self._record()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        if path == "/api/repos/create":
            payload = json.loads(raw)
            repo = f"{payload.get('organization') or 'me'}/{payload['name']}"
            url = f"{server.base}/{repo}"
            if repo in server.repos:
                self._json(409, {"error": "You already created this model repo", "url": url})
                return
            server.repos[repo] = {}
            self._json(200, {"url": url})
            return
        if path == "/api/validate-yaml":
            self._json(200, {"errors": [], "warnings": []})
            return
        found = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$", path)
        if not found or found.group(1) not in server.repos:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        repo, action, _ = found.groups()
        if action == "preupload":
            files = json.loads(raw)["files"]
            self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                        "oid": None} for f in files]})
            return
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        header = lines[0]
        if header["key"] != "header" or any(line["key"] != "file" for line in lines[1:]):
            self._json(400, {"error": f"unexpected commit lines {[line['key'] for line in lines]}"})
            return
        for line in lines[1:]:
            value = line["value"]
            assert value["encoding"] == "base64"
            server.repos[repo][value["path"]] = base64.b64decode(value["content"])
        server.commits.append({"repo": repo, "summary": header["value"]["summary"],
                               "files": [line["value"]["path"] for line in lines[1:]]})
        self._json(200, {"commitUrl": f"{server.base}/{repo}/commit/{COMMIT}", "commitOid": COMMIT})


# The local Hub in a thread, HF_ENDPOINT pointing at it, proxies and the host's guide variables cleared.
@pytest.fixture
def hubserver(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    httpd.repos, httpd.files, httpd.cut_once, httpd.log, httpd.commits = {}, {}, set(), [], []
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", httpd.base)
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("GUIDE_HF_REPO", "GUIDE_ACCEPT_LICENCE", "GUIDE_SOURCES", "GUIDE_HF_REVISION",
                "GUIDE_SPACE_MODELS"):
        monkeypatch.delenv(var, raising=False)
    # The client's import-time settings, set for the test: online, a private cache, small write chunks.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(transports, "GDOWN_COOKIES", str(tmp_path / "gdown-cookies.txt"))
    monkeypatch.setattr(transports, "_DRIVE_LISTINGS", {})
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# Small distinct bytes standing in for the file of a weights name.
def _payload(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest() * (1024 + len(name))


# The files of the paper's bundle under their bundle names, in a manifest of their own (no real hashes).
def _bundle_manifest(extra: dict | None = None) -> dict:
    eg3d = {"license": "NVIDIA Source Code License for EG3D: non-commercial (test)", "license_accept": True,
            "license_url": "https://github.com/NVlabs/eg3d/blob/main/LICENSE.txt"}
    entries = {
        "eg3d-ffhq-rebalanced": {"file": "eg3d-source.safetensors", "feature": "generator", **eg3d, "sources": []},
        "eg3d-ffhq-rebalanced-safetensors": {"file": "ffhqrebalanced512-128.safetensors", "feature": "converted",
                                             "converted_from": "eg3d-ffhq-rebalanced", **eg3d, "sources": []},
        "goae": {"file": "encoder_FFHQ.pt", "license": "research use", "sources": []},
        "ir_se50": {"file": "model_ir_se50.pth", "license": "MIT", "sources": []},
        "curricularface": {"file": "CurricularFace_Backbone.pth", "license": "see upstream", "sources": []},
        "vgg16": {"file": "vgg16-397923af.pth", "license": "BSD-3", "sources": []},
        "inception": {"file": "pt_inception-2015-12-05-6726825d.pth", "license": "Apache-2.0", "sources": []},
        "w-avg-ffhq-rebalanced": {"file": "w_avg_ffhqrebalanced512-128.pt", "w_avg_for": "eg3d-ffhq-rebalanced",
                                  **eg3d, "sources": []},
        "ffhq-real-feat": {"file": "ffhq_real_feat.npy", "license": "CC BY-NC-SA 4.0", "sources": []},
    }
    for name, fields in (extra or {}).items():
        entries[name] = {**entries[name], **fields}
    return entries


NETS = ("goae", "ir_se50", "curricularface", "vgg16", "inception", "w-avg-ffhq-rebalanced", "ffhq-real-feat")


# That manifest in place of the repository's, editable by the test.
@pytest.fixture
def manifest(monkeypatch):
    entries = _bundle_manifest()
    monkeypatch.setattr(catalogue, "manifest", lambda: entries)
    return entries


# Make `folder` the weights folder (GUIDE_WEIGHTS_DIR).
def _use_dir(monkeypatch, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(folder))
    return folder


# A narrow EG3D generator (seeded random weights, the released layout at 32 channels) saved in guide's format: the
# input publish converts. Built from its init_kwargs alone, so the saved config rebuilds it exactly.
@pytest.fixture(scope="module")
def small_generator(tmp_path_factory):
    from guide_core.eg3d import TriPlaneGenerator
    from guide_core.eg3d.io import save_generator

    torch.manual_seed(0)
    widths = {"channel_base": 1024, "channel_max": 32}
    G = TriPlaneGenerator(z_dim=512, c_dim=25, w_dim=512, img_resolution=32, img_channels=3, sr_num_fp16_res=0,
                          mapping_kwargs={"num_layers": 2}, rendering_kwargs=dict(testing.SMALL_RENDERING),
                          sr_kwargs={**widths, "fused_modconv_default": "inference_only"}, num_fp16_res=0,
                          conv_clamp=None, fused_modconv_default="inference_only", **widths)
    G.neural_rendering_resolution = 16
    path = save_generator(G, tmp_path_factory.mktemp("gen") / "eg3d-source.safetensors", write_json=False)
    return G, path


# A local port with nothing listening: connecting fails at once, like a machine without network.
def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------------
# Source chains and licences
# ---------------------------------------------------------------------------------------------------------------------

def test_source_chain_order_and_precedence(monkeypatch, manifest):
    manifest["goae"]["sources"] = [{"gdrive_folder": "FOLDER", "gdrive_name": "encoder_FFHQ.pt"},
                                   {"url": "https://example.org/encoder_FFHQ.pt"},
                                   {"hf_repo": "mirror/goae", "hf_filename": "ckpt/encoder_FFHQ.pt"}]
    kinds = lambda chain: [s["kind"] for s in chain]  # noqa: E731
    assert kinds(sources.sources_for("goae")) == ["hf", "url", "gdrive"]            # default order: hf, url, gdrive
    assert sources.sources_for("goae")[0]["filename"] == "ckpt/encoder_FFHQ.pt"
    assert sources.describe(sources.sources_for("goae")[2]) == "Google Drive folder FOLDER / encoder_FFHQ.pt"
    assert kinds(sources.sources_for("goae", kinds="url,gdrive")) == ["url", "gdrive"]
    monkeypatch.setenv("GUIDE_SOURCES", "gdrive")
    assert kinds(sources.sources_for("goae")) == ["gdrive"]
    monkeypatch.setenv("GUIDE_HF_REPO", "host/mirror")                            # a host's mirror replaces them all
    assert sources.sources_for("goae") == [{"kind": "hf", "repo": "host/mirror", "filename": "encoder_FFHQ.pt",
                                        "revision": None, "repo_type": "model"}]
    monkeypatch.setenv("GUIDE_GDRIVE_GOAE", "1AbCdEf")                            # per-name environment wins
    assert sources.sources_for("goae") == [{"kind": "gdrive", "id": "1AbCdEf"}]
    assert sources.sources_for("goae", url="https://x.org/a.pt") == [{"kind": "url", "url": "https://x.org/a.pt"}]
    with pytest.raises(W.UnknownWeightsError, match="unknown source kind.*ftp"):
        sources.sources_for("ir_se50", kinds="hf,ftp")


def test_licence_must_be_accepted_before_any_download(hubserver, manifest, tmp_path, monkeypatch, capsys):
    folder = _use_dir(monkeypatch, tmp_path / "w")
    hubserver.repos[HOST_REPO] = {m["file"]: _payload(n) for n, m in manifest.items()}
    assert cli_main(["weights", "fetch", "--all", "--hf-repo", HOST_REPO, "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("Licences of these files")                             # licences come first
    assert "* eg3d-ffhq-rebalanced-safetensors" in out and "NVIDIA Source Code License for EG3D" in out
    assert "--accept-licence" in err and "GUIDE_ACCEPT_LICENCE=1" in err and "nothing was downloaded" in err
    assert hubserver.log == [] and list(folder.iterdir()) == []
    assert cli_main(["weights", "fetch"]) == 2 and "NAME or --all" in capsys.readouterr().err
    assert cli_main(["weights", "fetch", "eg3d-ffhq-rebalanced", "--hf-repo", HOST_REPO, "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("licence of eg3d-ffhq-rebalanced: NVIDIA") and "--accept-licence" in err
    assert hubserver.log == [] and list(folder.iterdir()) == []
    # A file under a licence that needs no acceptance downloads without the flag.
    assert cli_main(["weights", "fetch", "goae", "--hf-repo", HOST_REPO, "--quiet"]) == 0
    assert (folder / "encoder_FFHQ.pt").read_bytes() == _payload("goae")


def test_offline_is_one_clear_line(hubserver, manifest, tmp_path, monkeypatch, capsys):
    folder = _use_dir(monkeypatch, tmp_path / "w")
    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    for name in ("eg3d-ffhq-rebalanced", *NETS):
        manifest[name]["sources"] = [{"hf_repo": "x/y"}, {"url": f"{dead}/{name}"}, {"gdrive": f"{dead}/d/{name}"}]
    assert cli_main(["weights", "fetch", "--all", "--accept-licence", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: offline: cannot reach 127.0.0.1:{dead.rsplit(':')[-1]}")
    assert "Traceback" not in err and list(folder.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------------
# gdown (Google Drive's transport) against the local server
# ---------------------------------------------------------------------------------------------------------------------

def test_gdown_download_resumes_across_runs_and_checks_the_hash(hubserver, manifest, tmp_path, monkeypatch):
    folder = _use_dir(monkeypatch, tmp_path / "w")
    monkeypatch.setattr(transports, "GDRIVE_RETRIES", 0)                  # surface the cut instead of retrying at once
    data = _payload("ffhq-real-feat") * 64
    hubserver.files["/files/ffhq_real_feat.npy"] = data
    hubserver.cut_once.add("/files/ffhq_real_feat.npy")
    link = f"{hubserver.base}/files/ffhq_real_feat.npy"
    with pytest.raises(W.FetchError, match="interrupted.*run the same fetch again to resume"):
        W.fetch("ffhq-real-feat", gdrive=link, progress=False)
    assert not (folder / "ffhq_real_feat.npy").exists()
    row = {r.name: r for r in W.status()}["ffhq-real-feat"]
    kept = row.size                                             # what gdown had written when the connection dropped
    assert row.verified == "partial" and 0 < kept <= hubserver.log[-1]["sent"] < len(data)
    path = W.fetch("ffhq-real-feat", gdrive=link, progress=False)
    assert path.read_bytes() == data and W.verify("ffhq-real-feat")[0].verdict == "recorded"
    assert hubserver.log[-1]["range"] == f"bytes={kept}-" and hubserver.log[-1]["sent"] == len(data) - kept
    assert sorted(p.name for p in folder.iterdir()) == ["ffhq_real_feat.npy", "hashes.json"]   # staging is gone

    manifest["goae"]["sha256"] = hashlib.sha256(b"the real encoder").hexdigest()
    hubserver.files["/files/encoder_FFHQ.pt"] = b"something else"
    with pytest.raises(W.HashMismatchError, match="corrupt or not the expected file"):
        W.fetch("goae", gdrive=f"{hubserver.base}/files/encoder_FFHQ.pt", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["ffhq_real_feat.npy", "hashes.json"]


def test_drive_folder_listing_selects_by_file_name():
    from gdown.download import GoogleDriveFileToDownload as Entry

    listing = [Entry(id="1aaa", path="encoder_FFHQ.pt", local_path="/x/encoder_FFHQ.pt"),
               Entry(id="1bbb", path="sub/ffhq_real_feat.npy", local_path="/x/sub/ffhq_real_feat.npy")]
    assert transports.pick_drive_file(listing, "ffhq_real_feat.npy", "F") == "1bbb"
    with pytest.raises(W.FetchError, match="has no model_ir_se50.pth \\(it lists: encoder_FFHQ.pt, ffhq_real"):
        transports.pick_drive_file(listing, "model_ir_se50.pth", "F")
    twice = listing + [Entry(id="1ccc", path="copy/encoder_FFHQ.pt", local_path="/x/copy/encoder_FFHQ.pt")]
    with pytest.raises(W.FetchError, match="2 files named encoder_FFHQ.pt.*--gdrive"):
        transports.pick_drive_file(twice, "encoder_FFHQ.pt", "F")


def test_a_failing_source_hands_over_to_the_next(hubserver, manifest, tmp_path, monkeypatch):
    folder = _use_dir(monkeypatch, tmp_path / "w")
    hubserver.repos["mirror/nets"] = {}
    hubserver.files["/files/model_ir_se50.pth"] = _payload("ir_se50")
    manifest["ir_se50"]["sources"] = [{"hf_repo": "mirror/nets"}, {"url": f"{hubserver.base}/files/model_ir_se50.pth"}]
    assert W.fetch("ir_se50", progress=False).read_bytes() == _payload("ir_se50")
    assert [(e["method"], e["path"]) for e in hubserver.log if e["path"] != "/"] == [
        ("HEAD", "/mirror/nets/resolve/main/model_ir_se50.pth"), ("HEAD", "/files/model_ir_se50.pth")][:1] + [
        ("GET", "/files/model_ir_se50.pth")]
    manifest["goae"]["sources"] = [{"hf_repo": "mirror/nets"}, {"hf_repo": "nobody/here"}]
    with pytest.raises(W.FetchError) as info:
        W.fetch("goae", progress=False)
    text = str(info.value)
    assert "mirror/nets on http" in text and "has no file encoder_FFHQ.pt" in text
    assert "no Hugging Face repository nobody/here" in text and "\n" not in text
    assert not (folder / "encoder_FFHQ.pt").exists()


# ---------------------------------------------------------------------------------------------------------------------
# publish -> a host's mirror -> a Space's start-up
# ---------------------------------------------------------------------------------------------------------------------

# Put every file of the bundle (the generator as its unconverted input) in a weights folder.
def _install_source_dir(folder: Path, manifest: dict, generator_path: Path) -> None:
    for name in NETS:
        (folder / manifest[name]["file"]).write_bytes(_payload(name))
    (folder / manifest["eg3d-ffhq-rebalanced"]["file"]).write_bytes(generator_path.read_bytes())


def test_publish_dry_run_touches_nothing(hubserver, manifest, small_generator, tmp_path, monkeypatch, capsys):
    folder = _use_dir(monkeypatch, tmp_path / "src")
    _install_source_dir(folder, manifest, small_generator[1])
    before = sorted(p.name for p in folder.iterdir())
    assert cli_main(["weights", "publish", "--repo", HOST_REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: would upload" in out and "ffhqrebalanced512-128.safetensors  <- converted from" in out
    assert "note: the real upload needs --accept-licence" in out
    assert f"  - {HOST_REPO} ffhqrebalanced512-128.safetensors,encoder_FFHQ.pt," in out
    assert hubserver.log == [] and sorted(p.name for p in folder.iterdir()) == before
    assert cli_main(["weights", "publish", "--repo", HOST_REPO]) == 2          # no licence acceptance: no upload
    assert "--accept-licence" in capsys.readouterr().err and hubserver.log == []
    assert cli_main(["weights", "publish", "--repo", "not a repo", "--dry-run"]) == 2
    capsys.readouterr()
    (folder / "eg3d-source.safetensors").write_bytes(b"not a generator")           # a corrupt input is refused
    assert cli_main(["weights", "publish", "--repo", HOST_REPO, "--accept-licence"]) == 1
    assert "cannot convert" in capsys.readouterr().err and hubserver.log == []
    (folder / "encoder_FFHQ.pt").unlink()
    assert cli_main(["weights", "publish", "--repo", HOST_REPO, "--dry-run"]) == 1
    assert "publish needs these files installed first: goae (encoder_FFHQ.pt)" in capsys.readouterr().err


def test_publish_then_space_start_up_loads_the_converted_generator(hubserver, manifest, small_generator, tmp_path,
                                                                   monkeypatch, capsys):
    G, generator_path = small_generator
    source = _use_dir(monkeypatch, tmp_path / "src")
    _install_source_dir(source, manifest, generator_path)
    licence_text = tmp_path / "LICENSE-EG3D.txt"
    licence_text.write_text("NVIDIA Source Code License for EG3D (test copy)\n")
    assert cli_main(["weights", "publish", "--repo", HOST_REPO, "--accept-licence", "--add", str(licence_text)]) == 0
    out = capsys.readouterr().out
    converted = source / "ffhqrebalanced512-128.safetensors"
    assert converted.is_file() and f"published 10 files to {hubserver.base}/{HOST_REPO}" in out
    uploaded = hubserver.repos[HOST_REPO]
    expected = {manifest[n]["file"]: (source / manifest[n]["file"]).read_bytes() for n in NETS}
    expected["ffhqrebalanced512-128.safetensors"] = converted.read_bytes()
    expected["LICENSE-EG3D.txt"] = licence_text.read_bytes()
    assert {k: v for k, v in uploaded.items() if k != "README.md"} == expected              # byte-identical
    card = uploaded["README.md"].decode()
    assert card.startswith("---\nlicense: other\n") and "non-commercial" in card
    assert hashlib.sha256(expected["encoder_FFHQ.pt"]).hexdigest() in card
    assert hubserver.commits[0]["repo"] == HOST_REPO and len(hubserver.commits) == 1
    posts = [e for e in hubserver.log if e["method"] == "POST"]
    assert [e["path"] for e in posts] == ["/api/repos/create", "/api/validate-yaml",
                                          f"/api/models/{HOST_REPO}/preupload/main",
                                          f"/api/models/{HOST_REPO}/commit/main"]
    assert all(e["auth"] == "Bearer hf_local_test_token" for e in posts)
    assert not any("xet" in e["path"] for e in hubserver.log)
    # Publishing again reuses the converted file and the existing repository.
    assert cli_main(["weights", "publish", "--repo", HOST_REPO, "--accept-licence"]) == 0
    assert "converting" not in capsys.readouterr().out and len(hubserver.commits) == 2

    # A Space: empty weights folder, GUIDE_HF_REPO + the accepted licence, start-up fetch.
    space = _use_dir(monkeypatch, tmp_path / "space")
    monkeypatch.setenv("GUIDE_HF_REPO", HOST_REPO)
    monkeypatch.setenv("GUIDE_ACCEPT_LICENCE", "1")
    from demo.app import fetch_released_weights

    hubserver.log.clear()
    assert fetch_released_weights() == []
    capsys.readouterr()
    for name, data in expected.items():
        if name != "LICENSE-EG3D.txt":
            assert (space / name).read_bytes() == data, name
    assert not (space / "eg3d-source.safetensors").exists()                 # the pickle's entry is not needed
    gets = {e["path"] for e in hubserver.log if e["method"] == "GET"}
    assert gets == {f"/{HOST_REPO}/resolve/main/{f}" for f in expected if f != "LICENSE-EG3D.txt"}
    assert released.released_generator_name("eg3d-ffhq-rebalanced") == "eg3d-ffhq-rebalanced-safetensors"
    assert released.required_weights("eg3d-ffhq-rebalanced")[0] == "eg3d-ffhq-rebalanced-safetensors"
    loaded = eg3d_io.load_generator(W.require(released.released_generator_name("eg3d-ffhq-rebalanced")))
    for key, value in G.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    from demo import handlers

    assert "eg3d-ffhq-rebalanced" in handlers.available_models() and "eg3d-ffhq" not in handlers.available_models()
    # A second start finds everything installed: nothing is downloaded again.
    hubserver.log.clear()
    assert fetch_released_weights() == [] and [e for e in hubserver.log if e["method"] == "GET"] == []


def test_space_preloaded_files_come_from_the_hub_cache(hubserver, manifest, tmp_path, monkeypatch, capsys):
    from huggingface_hub import hf_hub_download

    hubserver.repos[HOST_REPO] = {manifest[n]["file"]: _payload(n) for n in (*NETS, "eg3d-ffhq-rebalanced-safetensors")}
    for name in (*NETS, "eg3d-ffhq-rebalanced-safetensors"):                # what preload_from_hub does at build
        hf_hub_download(HOST_REPO, manifest[name]["file"], endpoint=hubserver.base)
    folder = _use_dir(monkeypatch, tmp_path / "w")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # the Hub is not even reachable now
    hubserver.log.clear()
    assert cli_main(["weights", "fetch", "--all", "--hf-repo", HOST_REPO, "--accept-licence", "--quiet"]) == 0
    assert "all files of eg3d-ffhq-rebalanced are installed" in capsys.readouterr().out
    assert (folder / "ffhqrebalanced512-128.safetensors").read_bytes() == _payload("eg3d-ffhq-rebalanced-safetensors")
    assert hubserver.log == []
    data = json.loads((folder / "hashes.json").read_text())["recorded"]
    assert data["goae"]["source"] == f"hf://{HOST_REPO}/encoder_FFHQ.pt (local Hugging Face cache)"


def test_bundle_prefers_an_installed_converted_generator(manifest, tmp_path, monkeypatch):
    folder = _use_dir(monkeypatch, tmp_path / "w")
    assert released.released_generator_name("eg3d-ffhq-rebalanced") == "eg3d-ffhq-rebalanced"
    (folder / "eg3d-source.safetensors").write_bytes(b"pickle stand-in")
    assert released.released_generator_name("eg3d-ffhq-rebalanced") == "eg3d-ffhq-rebalanced"
    (folder / "ffhqrebalanced512-128.safetensors").write_bytes(b"converted")
    assert released.released_generator_name("eg3d-ffhq-rebalanced") == "eg3d-ffhq-rebalanced-safetensors"
    assert released.released_generator_name("eg3d-ffhq") == "eg3d-ffhq"       # nothing declares itself its conversion
    with pytest.raises(FileNotFoundError) as info:
        registry.load_bundle("eg3d-ffhq-rebalanced")                           # only the networks are missing
    assert "goae (encoder_FFHQ.pt" in str(info.value) and "eg3d" not in str(info.value).split(";")[0]
    for name in NETS:
        (folder / manifest[name]["file"]).write_bytes(b"x")
    opened = []

    def load_generator(path, device="cpu"):  # records which file the bundle opens, then stops the build there
        opened.append(Path(path))
        raise RuntimeError("stop")

    monkeypatch.setattr(eg3d_io, "load_generator", load_generator)
    with pytest.raises(RuntimeError, match="stop"):
        registry.load_bundle("eg3d-ffhq-rebalanced")
    assert opened == [folder / "ffhqrebalanced512-128.safetensors"]
    (folder / "ffhqrebalanced512-128.safetensors").unlink()
    with pytest.raises(RuntimeError, match="stop"):
        registry.load_bundle("eg3d-ffhq-rebalanced")
    assert opened[-1] == folder / "eg3d-source.safetensors"


# ---------------------------------------------------------------------------------------------------------------------
# ZeroGPU wrapper
# ---------------------------------------------------------------------------------------------------------------------

def test_unlearning_asks_zerogpu_for_its_duration_only_on_a_space(monkeypatch):
    from demo import handlers

    if importlib.util.find_spec("spaces") is None:                           # here: plain functions, nothing wrapped
        assert inspect.isgeneratorfunction(handlers.run_unlearning)
        assert not hasattr(handlers.run_unlearning, "__wrapped__")
        assert handlers.gpu_unlearn(len) is len and handlers.gpu(len) is len
    asked = []

    # Stands in for the `spaces` package, which exists only on Hugging Face Spaces.
    def GPU(fn=None, duration=None):
        def wrap(f):
            asked.append((f.__name__, duration))
            return f
        return wrap(fn) if fn is not None else wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    # The handler package imported afresh, as on a Space; monkeypatch puts the modules already loaded back afterwards.
    import demo

    monkeypatch.setattr(demo, "handlers", handlers)
    for name in [m for m in sys.modules if m == "demo.handlers" or m.startswith("demo.handlers.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.import_module("demo.handlers")
    assert ("run_unlearning", handlers.UNLEARN_GPU_SECONDS) in asked and handlers.UNLEARN_GPU_SECONDS == 300
    assert ("upload_photo", None) in asked
