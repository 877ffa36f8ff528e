"""The unlearning loop: N identities at once, alone or continuing an earlier run (GUIDE Sec. 3.3, batched).

The loop holds the frozen original generator G_s (targets and preservation always come from it), G_u (a copy of G_s,
or of an earlier run's G_u when identities are forgotten one after another), the codes w_u [N, num_ws, 512] and
their targets w_t, the settings and the loss history; ``run()`` yields Progress. What is method-specific (targets,
which parameters train, the losses) is asked of a Method (guide_core.engine.method); GUIDE is the default.

Deliberate difference from the official unlearn.py: noise_mode "const" by default (the official run uses random
per-layer noise, which would make G_s's target renders differ every call; const noise makes them a constant that is
computed once).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from guide_core.config import LTUConfig
from guide_core.engine.draws import in_turns, sample_draws
from guide_core.engine.losses import LossNets, identity_scale, render
from guide_core.engine.method import Method, make_method, method_config

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle


@dataclass
class Progress:
    """One report of the unlearning loop: iteration, the losses as floats, optional preview images (uint8 HxWx3)."""

    step: int
    total: int
    losses: dict[str, float]
    previews: dict[str, np.ndarray] | None = None
    done: bool = False
    cancelled: bool = False
    seconds: float = 0.0
    unlearning: "Unlearning | None" = None


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[-1, 1] image tensor [3,H,W] -> uint8 HxWx3, the conversion the official code uses for its saved renders."""
    return (image.detach().permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def as_codes(w: torch.Tensor, num_ws: int, device: torch.device | str, name: str) -> torch.Tensor:
    """A source batch as [N, num_ws, 512] on the bundle's device, with a clear error for a wrong shape."""
    w = torch.as_tensor(w, dtype=torch.float32)
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.ndim != 3 or w.shape[1] != num_ws or w.shape[0] < 1:
        raise ValueError(f"{name} must be [num_ws={num_ws}, w_dim] or [N, {num_ws}, w_dim], got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or inf")
    return w.to(device)


class Unlearning:
    """Latent Target Unlearning of N identities at once; without cfg a run starts from the bundle's ltu_defaults.

    sources    one dict per identity for run.json: name, sha256, path, others ([{name, sha256, path, w}]) - the shape
               of guide_core.runs.source_record; the codes w_u / w_t are added from the tensors when the run is saved;
    base       the generator G_u starts from (default: a copy of G_s);
    base_run   what run.json says about where ``base`` came from (guide_core.runs.base_run_record);
    forgotten  (w_u, w_t) [M, num_ws, 512] of every identity the chain behind ``base`` forgot
               (guide_core.runs.forgotten_codes): they are held to their targets in the global loss
               (LTUConfig.n_glob_forgotten);
    photos     per identity, its aligned photos (robust unlearning re-inverts them);
    method     a registered method name or a Method (default: GUIDE);
    base_encoder  the encoder encoder-side unlearning starts from (a chain's parent run's E_u; default: the bundle's).
    """

    def __init__(self, bundle: "ModelBundle", w_u: torch.Tensor, w_t: torch.Tensor | None = None,
                 cfg: LTUConfig | None = None, cancel: threading.Event | None = None,
                 trainable_prefix: str | tuple[str, ...] | None = None, sources: list[dict[str, Any]] | None = None,
                 base: torch.nn.Module | None = None, base_run: dict[str, Any] | None = None,
                 photos: list[torch.Tensor] | None = None,
                 forgotten: tuple[torch.Tensor, torch.Tensor] | None = None, method: str | Method | None = None,
                 base_encoder: torch.nn.Module | None = None):
        self.bundle = bundle
        self.method = make_method(method)
        self.cfg = method_config(self.method, cfg or getattr(bundle, "ltu_defaults", None) or LTUConfig())
        self.cancel = cancel
        self.device = bundle.device
        self.G_s = bundle.G
        self.w_u = as_codes(w_u, bundle.num_ws, self.device, "w_u")
        self.w_t = (self.method.targets(bundle, self.w_u, self.cfg) if w_t is None
                    else as_codes(w_t, bundle.num_ws, self.device, "w_t"))
        if self.w_t.shape != self.w_u.shape:
            raise ValueError(f"w_t {tuple(self.w_t.shape)} does not match w_u {tuple(self.w_u.shape)}")
        n = self.w_u.shape[0]
        self.sources = [dict(s) for s in sources] if sources is not None else [{"name": f"identity {i + 1}"}
                                                                               for i in range(n)]
        if len(self.sources) != n:
            raise ValueError(f"{len(self.sources)} source records for {n} codes w_u: give one per identity")
        if base is not None and base_run is None:
            raise ValueError("a run that starts from another generator needs its base_run record (where it came from)")
        if forgotten is None and base_run is not None and base_run.get("sources"):
            raise ValueError("a run that continues a chain needs the codes its earlier runs forgot: pass "
                             "forgotten=guide_core.runs.forgotten_codes(base_run)")
        self.base_run = base_run
        self.forgotten = None if forgotten is None else tuple(
            torch.as_tensor(w, dtype=torch.float32).to(self.device) for w in forgotten)
        if photos is not None and len(photos) != n:
            raise ValueError(f"{len(photos)} photo batches for {n} identities: give each identity its aligned photos")
        self.photos = photos
        self.trainable_prefix = trainable_prefix or bundle.backend.trainable_prefix
        self.G_u = self.method.generator(bundle, self.G_s if base is None else base, self.trainable_prefix, self.cfg)
        if hasattr(self.G_u, "checkpointing"):  # a generator that can trade time for memory does as the run asks
            self.G_u.checkpointing = self.cfg.checkpoint_synthesis
        self.G_s.requires_grad_(False)
        self.history: list[dict[str, float]] = []
        self.steps_done = 0
        self.completed = False
        self.cancelled = False
        self.seconds = 0.0
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}  # further JSON-able facts for run.json
        self.method_tensors: dict[str, torch.Tensor] = {}  # what reproduces the method's run, beside the delta
        self.base_encoder = base_encoder
        self.encoder_u: torch.nn.Module | None = None  # E_u, when encoder-side unlearning ran
        self.nets: LossNets | None = None
        self.structure_t: torch.Tensor | None = None
        self.image_t: torch.Tensor | None = None
        self._started = False

    def _target_structure(self) -> torch.Tensor:
        """Frozen, constant work of a run: G_s's structure at w_t (noise is const), computed once."""
        with torch.no_grad():
            return self.bundle.backend.structure(self.G_s, self.w_t, self.cfg.noise_mode)

    def identity_photos(self) -> list[torch.Tensor]:
        """Each identity's photos [P, 3, H, W]: those given, else G_s's frontal render of w_u (what the encoder saw)."""
        if self.photos is None:
            with torch.no_grad():
                renders = self.bundle.synthesize(self.G_s, self.w_u, self.bundle.camera(0.0, 0.0))
            return [renders[i:i + 1] for i in range(len(renders))]
        photos = [torch.as_tensor(p, dtype=torch.float32).to(self.device) for p in self.photos]
        return [p.unsqueeze(0) if p.ndim == 3 else p for p in photos]

    def previews(self, which: tuple[str, ...] = ("source", "target", "unlearned"),
                 index: int = 0) -> dict[str, np.ndarray]:
        """Frontal renders of identity ``index``: source G_s(w_u), target G_s(w_t), current G_u(w_u)."""
        c = self.bundle.camera(0.0, self.cfg.pitch)
        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for key in which:
                G, w = {"source": (self.G_s, self.w_u), "target": (self.G_s, self.w_t),
                        "unlearned": (self.G_u, self.w_u)}[key]
                was_training = G.training
                G.eval()
                image = self.bundle.synthesize(G, w[index:index + 1], c, noise_mode=self.cfg.noise_mode)[0]
                G.train(was_training)
                out[key] = to_uint8(image)
        return out

    def run(self) -> Iterator[Progress]:
        """The training loop: one Progress per iteration (previews every ``preview_every``), then a final one."""
        if self._started:
            raise RuntimeError("this Unlearning has already run; create a new one to unlearn again")
        self._started = True
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # EG3D's stratified depth jitter draws from the global stream
        self.nets = LossNets.of(self.bundle, cfg)
        params = [p for p in self.G_u.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr * identity_scale(self.w_u.shape[0], cfg))
        self.structure_t = self._target_structure()
        z_dim = int(self.bundle.z_dim)
        if cfg.yaw_range == 0 and cfg.deterministic_render:  # fixed camera: G_s's render of w_t is a constant
            with torch.no_grad():
                c0 = self.bundle.camera(0.0, cfg.pitch)
                c0 = None if c0 is None else c0.expand(self.w_t.shape[0], -1)
                self.image_t = render(self.nets, self.G_s, self.structure_t, self.w_t, c0, cfg)
        self.method.start(self)
        self.G_u.train()
        self.G_s.eval()
        start = time.perf_counter()
        for step in range(cfg.iters):
            if self.cancel is not None and self.cancel.is_set():
                self.cancelled = True
                break
            draws = sample_draws(gen, cfg, self.w_u.shape[0], z_dim, step)
            if self.forgotten is not None and cfg.n_glob_forgotten:
                turn = in_turns(step, len(self.forgotten[0]), cfg.n_glob_forgotten)
                draws.forgotten = self.forgotten if turn is None else tuple(w[turn] for w in self.forgotten)
            total, losses = self.method.losses(self, step, draws, self.bundle.camera(draws.yaw, cfg.pitch))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            record = {k: float(v.detach()) for k, v in losses.items()}
            if not math.isfinite(record["total"]):
                raise FloatingPointError(f"LTU loss became {record['total']} at iteration {step}; lower the lr")
            self.history.append(record)
            self.steps_done = step + 1
            self.seconds = time.perf_counter() - start
            last = self.steps_done == cfg.iters
            show = last or (cfg.preview_every > 0 and step % cfg.preview_every == 0)
            yield Progress(step=self.steps_done, total=cfg.iters, losses=record,
                           previews=self.previews() if show else None, seconds=self.seconds)
        self.method.finish(self)
        if cfg.encoder_steps and self.completed_steps():
            self._unlearn_encoder()
        self.G_u.eval()
        self.G_u.requires_grad_(False)
        self.completed = self.completed_steps()
        yield Progress(step=self.steps_done, total=cfg.iters, losses=self.history[-1] if self.history else {},
                       previews=None, done=True, cancelled=self.cancelled, seconds=self.seconds, unlearning=self)

    def completed_steps(self) -> bool:
        """Whether every iteration ran (a cancelled run stops before its follow-up work)."""
        return self.steps_done == self.cfg.iters and not self.cancelled

    def _unlearn_encoder(self) -> None:
        """Encoder-side unlearning after the generator (guide_core.engine.encoder_side): E_u and its changed tensors."""
        from guide_core.engine.encoder_side import changed_encoder_tensors, unlearn_encoder

        start = time.perf_counter()
        self.encoder_u, history = unlearn_encoder(self.bundle, self.identity_photos(), self.w_t, self.cfg,
                                                  base=self.base_encoder)
        self.method_tensors.update(changed_encoder_tensors(self.encoder_u, self.bundle.encoder))
        self.extra["encoder_unlearning"] = {"steps": len(history), "first": history[:1], "last": history[-1:],
                                            "seconds": round(time.perf_counter() - start, 2)}
        self.seconds += time.perf_counter() - start

    def run_all(self, callback: Callable[[Progress], None] | None = None) -> "Unlearning":
        """Run to the end (or to cancellation) and return self; a convenience for scripts and tests."""
        for progress in self.run():
            if callback is not None:
                callback(progress)
        return self


def unlearn(bundle: "ModelBundle", w_u: torch.Tensor, w_t: torch.Tensor | None = None, cfg: LTUConfig | None = None,
            cancel: threading.Event | None = None, **kwargs: Any) -> Iterator[Progress]:
    """Batched unlearning as an iterator of Progress; the last one has done=True and ``.unlearning`` set."""
    return Unlearning(bundle, w_u, w_t, cfg, cancel, **kwargs).run()
