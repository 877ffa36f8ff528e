# Weights manager: the manifest of every file guide can use, safe fetching (resumable, hash-verified, atomic), safe
# loading (no code from checkpoints ever runs) and the `weights` command; w̄ lives with EG3D
# (guide_core.eg3d.mean_latent) and is re-exported here. Nothing here touches the network unless `fetch` is called.
# Where files come from (Hugging Face, HTTP, Google Drive), licence acceptance, `fetch --all` and `publish` live in
# guide_core.hub.
#
# Each name below is re-exported from the one module that defines it; code that must see a replaced attribute (tests
# swap the manifest) reads it from that module, e.g. `catalogue.manifest()`, never from this package.
from __future__ import annotations

from guide_core.weights.catalogue import (MANIFEST_FILE, REPO, SHIPPED_ROOT, entry, env_names,
                                          install_hint, install_steps, is_installed, manifest, path_of, require,
                                          weights_dir)

from guide_core.weights.download import CHUNK, fetch
from guide_core.weights.errors import (FetchError, HashMismatchError, LicenceNotAcceptedError, MissingWeightsError,
                                       NoSourceError, OfflineError, UnknownWeightsError, UnsafeCheckpointError,
                                       WeightsError)
from guide_core.weights.hashes import HASHES_FILE, expected_hash, judge_hash, record_hash, sha256_file
from guide_core.weights.inventory import VerifyResult, WeightStatus, record, status, verify, verify_one
from guide_core.weights.safe_load import load_generator, load_npy, load_safetensors, load_torch, load_torch_state_dict

_MEAN_LATENT = ("conditioning_camera", "mean_of_mapping", "w_avg", "w_avg_with_source")

__all__ = [
    "REPO", "SHIPPED_ROOT", "MANIFEST_FILE", "HASHES_FILE", "CHUNK",
    "WeightsError", "UnknownWeightsError", "MissingWeightsError", "FetchError", "NoSourceError", "OfflineError",
    "LicenceNotAcceptedError", "HashMismatchError", "UnsafeCheckpointError",
    "weights_dir", "manifest", "entry", "path_of", "is_installed", "env_names", "install_steps", "install_hint",
    "require", "sha256_file", "expected_hash", "judge_hash", "record_hash",
    "WeightStatus", "VerifyResult", "status", "verify", "verify_one", "record", "fetch",
    "load_torch", "load_torch_state_dict", "load_safetensors", "load_npy", "load_generator",
    *_MEAN_LATENT,
]


# The w̄ functions load on first use: they pull in the EG3D package, which the rest of this package does not need.
def __getattr__(name: str):
    if name in _MEAN_LATENT:
        from guide_core.eg3d import mean_latent
        return getattr(mean_latent, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
