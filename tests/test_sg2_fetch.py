"""`weights fetch --model sg2-ffhq`: the 2D model's files, licence first, from the Hugging Face mirror and, where the
mirror fails, from the next source, against servers on 127.0.0.1 (tests/test_hub.py's hub server)."""
from __future__ import annotations

import pytest

from guide_core import fetching, registry
from guide_core.__main__ import main as cli_main
from guide_core.weights import catalogue
from tests.test_hub import _bundle_manifest, _payload, _use_dir, hubserver  # noqa: F401  (the local hub server)

SG2_NETS = ("ir_se50", "curricularface", "vgg16", "inception", "ffhq-real-feat")
NVIDIA = {"license": "MIT code; StyleGAN2 FFHQ weights: NVIDIA non-commercial (test)", "license_accept": True}


@pytest.fixture
def manifest(monkeypatch, hubserver):  # noqa: F811
    entries = _bundle_manifest()
    for name, file in (("psp-ffhq", "psp_ffhq_encode.pt"), ("e4e-ffhq", "e4e_ffhq_encode.pt")):
        entries[name] = {"file": file, **NVIDIA, "sources": [{"hf_repo": "mirror/sg2", "hf_filename": file},
                                                              {"url": f"{hubserver.base}/drive/{file}"}]}
    monkeypatch.setattr(catalogue, "manifest", lambda: entries)
    return entries


def test_the_plan_of_a_2d_model_is_its_release_file_and_the_shared_networks(manifest):
    steps = fetching.plan("sg2-ffhq")
    assert [s.candidates for s in steps] == [["psp-ffhq"], ["ir_se50"], ["curricularface"], ["vgg16"], ["inception"],
                                             ["ffhq-real-feat"]]
    assert [s.optional for s in steps] == [False] * 5 + [True]
    assert fetching.plan("sg2-ffhq-e4e")[0].candidates == ["e4e-ffhq"]
    assert registry.required_weights("sg2-ffhq-e4e") == ["e4e-ffhq", "ir_se50", "curricularface", "vgg16", "inception"]
    with pytest.raises(Exception, match="known: .*sg2-ffhq"):
        fetching.plan("sg2-nothing")


def test_fetch_model_takes_the_mirror_then_the_next_source_after_the_licence(manifest, hubserver, tmp_path,  # noqa: F811
                                                                            monkeypatch, capsys):
    folder = _use_dir(monkeypatch, tmp_path / "w")
    hubserver.repos["mirror/sg2"] = {}                       # the mirror is up but has lost the pSp file
    hubserver.files["/drive/psp_ffhq_encode.pt"] = _payload("psp-ffhq")
    for name in SG2_NETS:
        manifest[name]["sources"] = [{"hf_repo": "mirror/nets", "hf_filename": manifest[name]["file"]}]
    hubserver.repos["mirror/nets"] = {manifest[n]["file"]: _payload(n) for n in SG2_NETS}
    assert cli_main(["weights", "fetch", "--model", "sg2-ffhq", "--quiet"]) == 2   # licence not accepted: nothing
    assert "--accept-licence" in capsys.readouterr().err and list(folder.iterdir()) == []
    assert cli_main(["weights", "fetch", "--model", "sg2-ffhq", "--accept-licence", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Licences of these files") and "all files of sg2-ffhq are installed" in out
    assert (folder / "psp_ffhq_encode.pt").read_bytes() == _payload("psp-ffhq")
    assert all((folder / manifest[n]["file"]).read_bytes() == _payload(n) for n in SG2_NETS)
    asked = [e["path"] for e in hubserver.log if "psp_ffhq_encode" in e["path"]]
    assert asked[0] == "/mirror/sg2/resolve/main/psp_ffhq_encode.pt" and asked[-1] == "/drive/psp_ffhq_encode.pt"


def test_the_real_manifest_pins_the_2d_release_files():
    entries = catalogue.manifest()
    psp, e4e = entries["psp-ffhq"], entries["e4e-ffhq"]
    assert psp["sha256"] == "f786ac5cf18fcdbc5c57c9f3f12cbedca69381fbdf5694dd132294e3133749d7"
    assert e4e["sha256"] == "2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999"
    assert e4e["size"] == 1201649680 and psp["license_accept"] and e4e["license_accept"]
    assert [next(iter(s)) for s in psp["sources"]] == ["hf_repo", "gdrive"]
    assert psp["sources"][0]["hf_repo"] == "trysem/pixel2style2pixel" and e4e["sources"][0]["hf_repo"] == "public-data/e4e"
