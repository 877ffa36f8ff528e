"""The weights manager's errors: each one a user can act on, its message naming the file, where it goes and the fix."""
from __future__ import annotations


class WeightsError(Exception):
    """Base class of the weights manager's errors."""


class UnknownWeightsError(WeightsError, ValueError):
    """A name the manifest does not know (a typo in --model, a stale config); the message lists the known names."""


class MissingWeightsError(WeightsError, FileNotFoundError):
    """A required file is absent (raised by `require`); the message says where to put it and how to fetch it."""


class FetchError(WeightsError, RuntimeError):
    """A download cannot complete or was cut; the partial `.part` file stays for a resume."""


class NoSourceError(FetchError):
    """Nothing says where a file can be downloaded from: neither arguments, environment nor manifest give a source
    (a manual download is needed, or --url / --hf-repo)."""


class OfflineError(FetchError):
    """No connection to a download host at all (offline, DNS failure, firewall): nothing was downloaded. `host`
    names the host (host:port), or several, comma-separated."""

    def __init__(self, message: str, host: str | None = None):
        super().__init__(message)
        self.host = host


class LicenceNotAcceptedError(WeightsError):
    """A file whose manifest entry has license_accept (the NVIDIA EG3D licence) was asked for before its licence was
    accepted: nothing was downloaded."""


class HashMismatchError(WeightsError, ValueError):
    """The downloaded (or installed) bytes are not the expected file: their SHA-256 (or size) disagrees with the
    known value; a downloaded bad file is removed first."""


class UnsafeCheckpointError(WeightsError, ValueError):
    """A checkpoint that is not plain tensors: it would need code stored in it to load (refused), or it is not the
    structure asked for."""
