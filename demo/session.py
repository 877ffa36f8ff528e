"""Per-visitor state of the studio, kept in gr.State.

The identities listed, the chain of finished runs and this visitor's unlearned generator. Nothing in here is ever
shared with another session.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch


class OtherPhoto(NamedTuple):
    """Another photo of a listed person (ID_others in the paper): its file name, SHA-256, code and aligned crop."""
    name: str
    sha256: str
    w: torch.Tensor
    aligned: Any


@dataclasses.dataclass
class Identity:
    """One person to forget: the photo they were inverted from, its codes, and what the Source tab shows of them."""
    name: str  # the uploaded file's name without its suffix (as the CLI names identities), made unique per session
    sha256: str
    file_name: str
    aligned: Any  # guide_core.faces.AlignedFace (or the world's equivalent)
    w_u: torch.Tensor
    plane: Any  # plots.LatentPlane of this identity: the UFO picture's axes
    detected: np.ndarray  # display copy of the photo with the detected box
    inversion: np.ndarray  # display render G_s(w_u)
    others: list[OtherPhoto] = dataclasses.field(default_factory=list)
    w_t: torch.Tensor | None = None  # UFO target at the session's d
    forgotten_in: int | None = None  # position (from 1) in the session's chain of the finished run that forgot it
    upload_path: str = ""  # the uploaded file this identity was inverted from, and the status that upload showed:
    upload_note: str = ""  # the browser may deliver one upload twice, and the second must show the same page


@dataclasses.dataclass
class ChainRun:
    """A finished run that a later run continues from: its Unlearning and, once a later run needed it, its folder."""
    job: Any
    run_dir: Path | None = None


@dataclasses.dataclass
class StudioSession:
    """One visitor's studio: the model, the listed identities, the chain of runs and the latest unlearned generator."""
    model: str | None = None
    identities: list[Identity] = dataclasses.field(default_factory=list)
    selected: str | None = None  # name of the identity the Source and UFO tabs show
    d: float | None = None
    chain: list[ChainRun] = dataclasses.field(default_factory=list)  # finished runs, first to latest
    generator_u: Any = None  # this visitor's unlearned copy G_u; None until a run finishes or is cancelled
    job: Any = None  # the guide.Unlearning that produced generator_u (settings, codes, loss history)
    config: Any = None  # the LTUConfig of the last run
    steps: list[int] = dataclasses.field(default_factory=list)
    losses: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    run_seconds: float = 0.0
    run_state: str = "none"  # none | running | cancelled | finished
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    _workdir: Path | None = None  # made on first use: most visitors never save a run

    def __deepcopy__(self, memo) -> "StudioSession":
        """Gradio deep-copies initial state values; a session is never copied, a copy starts a fresh one."""
        return StudioSession()

    @property
    def workdir(self) -> Path:
        """This visitor's private folder for saved runs and downloads."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="guide-session-"))
            # Gradio's delete callback never fires for a server that stops or a session dropped unused, and each
            # saved run is a generator delta of up to a hundred megabytes: the folder goes with the session object,
            # or at the latest with the process.
            weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        return self._workdir

    @property
    def current(self) -> Identity | None:
        """The selected identity (None while none is listed)."""
        return next((i for i in self.identities if i.name == self.selected), None)

    def identity(self, name: str | None) -> Identity | None:
        """The listed identity of that name (None when there is none)."""
        return next((i for i in self.identities if i.name == name), None)

    def forget_run(self) -> None:
        """Drop the latest run's generator, settings and loss history (the chain of finished runs stays)."""
        self.generator_u, self.job, self.config, self.steps, self.losses = None, None, None, [], {}
        self.run_state = "none"
        self.run_seconds = 0.0

    def reset(self, model: str | None) -> None:
        """A new model: identities, runs and the unlearned generator all belong to the old one."""
        self.model, self.identities, self.selected, self.chain = model, [], None, []
        self.forget_run()


def new_session() -> StudioSession:
    """A fresh, empty session."""
    return StudioSession()


def end_session(session: StudioSession | None) -> None:
    """Gradio drops a visitor's state after they leave: stop their run and remove their run files with it."""
    if session is None:
        return
    session.cancel.set()
    session.generator_u = session.job = None
    session.chain = []
    if session._workdir is not None:
        shutil.rmtree(session._workdir, ignore_errors=True)
