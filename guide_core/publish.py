"""`weights publish`: a host's own Hugging Face model repository with every file of a released bundle.

The EG3D pickle is converted to guide's .safetensors (same weights, no pickle to read), then the generator, the
required networks and the installed optional files are uploaded in one commit with a model card naming each file's
licence and SHA-256. A Space then sets GUIDE_HF_REPO to that repository and fetches everything from it
(guide_core.fetching).
"""
from __future__ import annotations

import os
import pickle
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

from guide_core.fetching import DEFAULT_MODEL, plan
from guide_core.files import human_size, sha256_file
from guide_core.weights.catalogue import converted_name, entry, is_installed, path_of
from guide_core.weights.errors import (FetchError, MissingWeightsError, UnknownWeightsError, UnsafeCheckpointError,
                                       WeightsError)
from guide_core.weights.hashes import record_hash, remember_check
from guide_core.weights.licences import ENV_ACCEPT, licence_accepted, licence_line, print_licences, require_licence
from guide_core.weights.sources import ENV_HOST_REPO
from guide_core.weights.transports import hf_endpoint, one_line

CARD_FILE = "README.md"


@dataclass
class Upload:
    """One file to upload: the manifest name it belongs to, where it lies, and its name in the repository."""
    name: str
    path: Path
    path_in_repo: str
    convert_from: Path | None = None     # set when the file is still to be converted from this pickle


def publish_plan(model: str = DEFAULT_MODEL) -> list[Upload]:
    """The files `publish` uploads for a bundle: the converted generator (converting the pickle when needed), the
    required networks, and the optional files that are installed. A missing required file is one error naming them
    all."""
    steps = plan(model)
    generator = steps[0].candidates[-1]
    converted = converted_name(generator)
    if converted is None:
        raise WeightsError(f"the manifest has no converted entry for {generator}; publish needs one")
    uploads, missing = [], []
    if is_installed(converted):
        uploads.append(Upload(converted, path_of(converted), entry(converted)["file"]))
    elif is_installed(generator):
        uploads.append(Upload(converted, path_of(converted), entry(converted)["file"],
                              convert_from=path_of(generator)))
    else:
        missing.append(f"{generator} ({entry(generator)['file']})")
    for step in steps[1:]:
        name = step.candidates[0]
        if is_installed(name):
            uploads.append(Upload(name, path_of(name), entry(name)["file"]))
        elif not step.optional:
            missing.append(f"{name} ({entry(name)['file']})")
    if missing:
        raise MissingWeightsError(f"publish needs these files installed first: {', '.join(missing)}; run "
                                  f"`python -m guide_core weights fetch --all --accept-licence`")
    return uploads


def space_front_matter(repo: str, uploads: list[Upload]) -> list[str]:
    """The lines a Space's README front matter needs to preload a published repository's files at build time."""
    files = ",".join(u.path_in_repo for u in uploads)
    return ["preload_from_hub:", f"  - {repo} {files}"]


def model_card(repo: str, uploads: list[Upload]) -> str:
    """The model card of the published repository: what each file is, its licence and SHA-256."""
    rows = []
    for u in uploads:
        digest = sha256_file(u.path) if u.path.is_file() else "(written at publish)"
        rows.append(f"| `{u.path_in_repo}` | {entry(u.name).get('feature', u.name)} | {licence_line(u.name)} | "
                    f"`{digest}` |")
    return "\n".join([
        "---",
        "license: other",
        "license_name: nvidia-source-code-license-eg3d",
        "license_link: https://github.com/NVlabs/eg3d/blob/main/LICENSE.txt",
        "tags:",
        "  - eg3d",
        "  - machine-unlearning",
        "---",
        f"# {repo}: weights for guide",
        "",
        "The files guide (generative identity unlearning for EG3D; GUIDE, Seo et al. CVPR 2024) needs for its released",
        "model bundle, uploaded by `python -m guide_core weights publish`. Set `GUIDE_HF_REPO` to this repository and",
        "`python -m guide_core weights fetch --all` takes every file from here.",
        "",
        "**Licences.** The generator is NVIDIA's EG3D (converted to guide's .safetensors format: same weights, no",
        "pickle) under the NVIDIA Source Code License for EG3D: non-commercial research and evaluation use only. The",
        "other files keep the terms of their authors, listed per file below.",
        "",
        "| file | what | licence | SHA-256 |",
        "|-|-|-|-|",
        *rows,
        "",
    ])


def convert_generator(upload: Upload, progress_out: TextIO | None = None) -> Path:
    """Convert the EG3D pickle to guide's .safetensors (+ .json) next to the other weights, and record its hash."""
    from guide_core.eg3d.io import load_generator_file, save_generator

    if progress_out is not None:
        print(f"converting {upload.convert_from} -> {upload.path} (weights only; nothing in the pickle runs)",
              file=progress_out)
    try:
        G = load_generator_file(upload.convert_from, "cpu")
    except (ValueError, OSError, pickle.UnpicklingError) as exc:  # a corrupt, foreign or refused pickle
        raise UnsafeCheckpointError(f"cannot convert {upload.convert_from}: {one_line(exc)}") from None
    save_generator(G, upload.path)
    digest = sha256_file(upload.path)
    record_hash(upload.name, upload.path, digest, f"converted from {upload.convert_from.name}")
    remember_check(upload.name, upload.path, digest)
    upload.convert_from = None
    return upload.path


def publish(repo: str, *, model: str = DEFAULT_MODEL, dry_run: bool = False, token: str | None = None,
            private: bool = False, accept_licence: bool | None = None, extra: Iterable[str | os.PathLike] = (),
            out: TextIO | None = None) -> str | None:
    """Convert and upload a bundle's files to the host's Hugging Face model repository (created when absent), in one
    commit; `extra` files are uploaded too. dry_run prints the plan and touches nothing. Returns the commit URL (None
    for a dry run)."""
    out = out or sys.stdout
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo or ""):
        raise UnknownWeightsError(f"--repo must be OWNER/NAME, got {repo!r}")
    uploads = publish_plan(model)
    extra_paths = [Path(p) for p in extra]
    absent = [str(p) for p in extra_paths if not p.is_file()]
    if absent:
        raise MissingWeightsError(f"--add: no such file: {', '.join(absent)}")
    print_licences([u.name for u in uploads], out)
    if dry_run:
        print(f"dry run: would upload to {hf_endpoint()}/{repo} (model repository{', private' if private else ''}):",
              file=out)
        for u in uploads:
            what = f"converted from {u.convert_from}" if u.convert_from else \
                f"{u.path} ({human_size(u.path.stat().st_size)})"
            print(f"  {u.path_in_repo}  <- {what}", file=out)
        for p in extra_paths:
            print(f"  {p.name}  <- {p}", file=out)
        print(f"  {CARD_FILE}  <- model card (files, licences, SHA-256)", file=out)
        if not licence_accepted(accept_licence):
            print(f"note: the real upload needs --accept-licence (or {ENV_ACCEPT}=1): it redistributes files whose "
                  f"licence must be accepted", file=out)
        _print_front_matter(repo, uploads, out)
        return None
    # Uploading redistributes NVIDIA's model: the same acceptance as downloading it.
    require_licence([u.name for u in uploads], accept_licence)
    for u in uploads:
        if u.convert_from is not None:
            convert_generator(u, out)
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hf_endpoint(), token=token)
    with tempfile.TemporaryDirectory(prefix="guide-card-") as tmp:
        card = Path(tmp) / CARD_FILE
        card.write_text(model_card(repo, uploads))
        operations = [CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=str(u.path)) for u in uploads]
        operations += [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in extra_paths]
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=str(card)))
        try:
            api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
            info = api.create_commit(repo, operations, repo_type="model",
                                     commit_message=f"guide weights for {model} (weights publish)")
        except Exception as exc:  # noqa: BLE001 - huggingface_hub raises HTTP, auth and validation errors
            raise FetchError(f"upload to {hf_endpoint()}/{repo} failed ({type(exc).__name__}: {one_line(exc)}); "
                             f"log in with `hf auth login` (a token with write access) and run again") from None
    print(f"published {len(operations)} files to {hf_endpoint()}/{repo}: {info.commit_url}", file=out)
    _print_front_matter(repo, uploads, out)
    return info.commit_url


def _print_front_matter(repo: str, uploads: list[Upload], out: TextIO) -> None:
    """The Space set-up lines printed after a publish (docs/spaces.md explains them)."""
    print("\nfor a Space running the studio from this repository, put in its README front matter:", file=out)
    for line in space_front_matter(repo, uploads):
        print(f"  {line}", file=out)
    print(f"and set the Space variables {ENV_HOST_REPO}={repo} and {ENV_ACCEPT}=1 (see docs/spaces.md)", file=out)
