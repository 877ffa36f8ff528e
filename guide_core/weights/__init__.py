"""Weights manager: the manifest of every file guide can use, where each one comes from (Hugging Face, HTTP, Google
Drive) and under which licence, safe fetching (resumable, hash-verified, atomic), safe loading (no code from
checkpoints ever runs) and the status of what is installed. Nothing here touches the network unless `fetch` is
called.

This package is a leaf above guide_core's base helpers: it knows no model. The EG3D generator loader is
guide_core.eg3d.io.load_generator, w̄ is guide_core.eg3d.mean_latent, the files a whole model needs (`fetch --all`) are
guide_core.fetching, and `weights publish` is guide_core.publish.

Each name below is re-exported from the one module that defines it; code that must see a replaced attribute (tests
swap the manifest) reads it from that module, e.g. `catalogue.manifest()`, never from this package.
"""
from __future__ import annotations

from guide_core.files import sha256_file
from guide_core.weights.catalogue import (MANIFEST_FILE, REPO, SHIPPED_ROOT, converted_name, entry, env_names,
                                          install_hint, install_steps, is_installed, manifest, path_of, require,
                                          weights_dir)
from guide_core.weights.download import fetch
from guide_core.weights.errors import (FetchError, HashMismatchError, LicenceNotAcceptedError, MissingWeightsError,
                                       NoSourceError, OfflineError, UnknownWeightsError, UnsafeCheckpointError,
                                       WeightsError)
from guide_core.weights.hashes import HASHES_FILE, expected_hash, judge_hash, record_hash
from guide_core.weights.inversion_file import InversionCheckpoint, read_inversion_checkpoint
from guide_core.weights.inventory import (VerifyResult, WeightStatus, record, status, status_table, verify,
                                          verify_one)
from guide_core.weights.licences import licence_accepted, licence_line, needs_acceptance, require_licence
from guide_core.weights.safe_load import (load_npy, load_safetensors, load_torch, load_torch_state_dict,
                                          tensor_file_refusal)
from guide_core.weights.sources import describe, sources_for
from guide_core.weights.transports import CHUNK

__all__ = [
    "REPO", "SHIPPED_ROOT", "MANIFEST_FILE", "HASHES_FILE", "CHUNK",
    "WeightsError", "UnknownWeightsError", "MissingWeightsError", "FetchError", "NoSourceError", "OfflineError",
    "LicenceNotAcceptedError", "HashMismatchError", "UnsafeCheckpointError",
    "weights_dir", "manifest", "entry", "path_of", "is_installed", "env_names", "install_steps", "install_hint",
    "require", "converted_name", "sha256_file", "expected_hash", "judge_hash", "record_hash",
    "WeightStatus", "VerifyResult", "status", "status_table", "verify", "verify_one", "record", "fetch",
    "needs_acceptance", "licence_accepted", "licence_line", "require_licence", "sources_for", "describe",
    "load_torch", "load_torch_state_dict", "InversionCheckpoint", "read_inversion_checkpoint",
    "load_inversion_checkpoint", "load_safetensors", "load_npy", "tensor_file_refusal",
]


def __getattr__(name: str):
    """``load_inversion_checkpoint`` is part of this package's public contract but builds networks, which this leaf
    layer knows nothing of: it is lent, on first use, by the encoders that build them (the one import this package
    makes of a layer above it; tests/test_layers.py names it)."""
    if name == "load_inversion_checkpoint":
        from guide_core.encoders.inversion import load_inversion_checkpoint

        return load_inversion_checkpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
