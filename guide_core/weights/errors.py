# The weights manager's errors: each one a user can act on, its message naming the file, where it goes and the fix.
from __future__ import annotations


class WeightsError(Exception):
    """Base class of the weights manager's errors."""


# An unknown manifest name (a typo in --model, a stale config).
class UnknownWeightsError(WeightsError, ValueError):
    """Raised for a name the manifest does not know; the message lists the known names."""


# A required file is absent.
class MissingWeightsError(WeightsError, FileNotFoundError):
    """Raised by `require` when the file is not installed; the message says where to put it and how to fetch it."""


# A download failed or was cut; the partial `.part` file stays for a resume.
class FetchError(WeightsError, RuntimeError):
    """Raised when a download cannot complete."""


# Nothing says where a file can be downloaded from (manual download needed, or --url / --hf-repo).
class NoSourceError(FetchError):
    """Raised by `fetch` when neither arguments, environment nor manifest give a source."""


# No connection to a download host at all (offline, DNS failure, firewall): nothing was downloaded.
class OfflineError(FetchError):
    """Raised when a host cannot be reached; `host` names it (host:port)."""

    def __init__(self, message: str, host: str | None = None):
        super().__init__(message)
        self.host = host


# A file whose licence must be accepted first (the NVIDIA EG3D licence): nothing was downloaded.
class LicenceNotAcceptedError(WeightsError):
    """Raised before downloading a file whose manifest entry has license_accept, until the licence is accepted."""


# The downloaded (or installed) bytes are not the expected file.
class HashMismatchError(WeightsError, ValueError):
    """Raised when a file's SHA-256 (or size) disagrees with the known value; the bad file is removed first."""


# A checkpoint that is not plain tensors (pickled code, wrong structure).
class UnsafeCheckpointError(WeightsError, ValueError):
    """Raised when a checkpoint would need arbitrary code to load, or is not the structure asked for."""
