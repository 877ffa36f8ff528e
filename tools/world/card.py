"""The model card of the shipped world weights (weights/default/MODEL_CARD.md), written from metrics.json.

Written by ``export`` from the measured metrics, so that the card's numbers are always those of the shipped files.
"""
from __future__ import annotations

from guide_core.world.generator import (CHANNEL_BASE, CHANNEL_MAX, GENERATOR_KWARGS, MAPPING_LAYERS,
                                        NEURAL_RENDERING_RESOLUTION, PLANE_RESOLUTION, WorldSuperresolution2X)
from guide_core.world.heads import N_ID, Z_DIM
from tools.world.data import DATASETS
from tools.world.generator import MSE_WEIGHT, POLISH_STEPS, GeneratorTrainConfig, learning_rate


def _fmt(metrics: dict, net: str, key: str, digits: int = 3, unit: str = "") -> str:
    """One metric of one network as the card shows it ("not trained yet" when absent)."""
    value = metrics.get(net, {}).get(key)
    return "not trained yet" if value is None else f"{value:.{digits}f}{unit}"


def _steps(net: dict) -> str:
    """The trained-steps cell: a network kept from the previous export was trained against that generator."""
    kept = " (kept from the previous export: trained with its generator, re-measured with this one)"
    return f"{net.get('steps', '-')}" + (kept if net.get("kept_from_export") else "")


def _on(net: dict) -> str:
    """On how many held-out photos a metric was measured (metrics.json files written before the count: not said)."""
    return f" on {net['n']:,} photos" if "n" in net else ""


def _generator_architecture(gen: dict) -> str:
    """One line on the generator's architecture, from the constants it is built with."""
    k = GENERATOR_KWARGS
    plane_resolution = gen.get("plane_resolution", PLANE_RESOLUTION)
    widths = (gen.get("channel_base", k["channel_base"]), gen.get("channel_max", k["channel_max"]))
    mapping_layers = gen.get("mapping_layers", MAPPING_LAYERS)
    r = k["rendering_kwargs"]
    sr = " and ".join(str(w) for w in WorldSuperresolution2X.widths)
    # metrics.json files written before the option are EG3D's: z divided by its RMS.
    z_input = "divided by its RMS as in EG3D" if gen.get("normalize_z", True) else "read as it is, not RMS-normalised"
    return (f"`guide_core.eg3d.TriPlaneGenerator`: z {k['z_dim']} ({z_input}) / w {k['w_dim']}, mapping "
            f"{mapping_layers} layers, channel_base {widths[0]} / channel_max {widths[1]}, tri-planes "
            f"{plane_resolution}² (EG3D: 256²), {r['depth_resolution']}+"
            f"{r['depth_resolution_importance']} depth samples, neural rendering {NEURAL_RENDERING_RESOLUTION}², "
            f"super-resolution 2X to {k['img_resolution']}² with blocks of {sr} channels")


def _generator_legs(gen: dict) -> str:
    """The `train generator` calls the shipped generator went through (the checkpoint's legs), as one sentence."""
    legs = gen.get("legs") or []
    # The widths the first leg built: the shipped ones, unless a later leg widened the generator. Every call names
    # the architecture it continues (a resumed or --init-from run refuses other widths or depths).
    widened = [leg for leg in legs if "widened_to" in leg]
    widths = tuple(widened[0]["widened_from"]) if widened else (gen.get("channel_base", CHANNEL_BASE),
                                                               gen.get("channel_max", CHANNEL_MAX))
    mapping_layers = gen.get("mapping_layers", MAPPING_LAYERS)
    if not legs:
        return ""
    default = GeneratorTrainConfig()  # `train generator`'s defaults: a leg's flags are the settings that differ
    parts = []
    for i, leg in enumerate(legs):
        end = legs[i + 1]["from_step"] if i + 1 < len(legs) else gen.get("steps", leg["steps"] + leg["polish_steps"])
        start = [f"--init-from {leg['init_from']}"] if "init_from" in leg else [] if i == 0 else ["--resume"]
        flags = start + [f"--steps {leg['steps']}", f"--polish-steps {leg['polish_steps']}"]
        flags += [f"--batch {leg['batch']}"] if leg.get("batch", default.batch) != default.batch else []
        flags += [f"--mapping-layers {mapping_layers}"] if mapping_layers != default.mapping_layers else []
        widths = tuple(leg.get("widened_to", widths))
        if widths != (default.channel_base, default.channel_max):
            flags += [f"--channel-base {widths[0]}", f"--channel-max {widths[1]}"]
        flags += ["--widen"] if "widened_to" in leg else []
        if leg["normalize_z"] != default.normalize_z:
            flags += ["--normalize-z" if leg["normalize_z"] else "--no-normalize-z"]
        flags += [f"--{k.replace('_', '-')} {leg[k]:g}" for k in ("lr", "polish_lr")
                  if leg.get(k, getattr(default, k)) != getattr(default, k)]
        note = []
        k = leg["from_step"] - leg["steps"]
        if i > 0 and k > 0:  # a longer polish resumed mid-way restarts its cosine at this rate
            rate = learning_rate(leg["from_step"], leg["steps"], leg["polish_steps"], leg["lr"], leg["polish_lr"])
            note.append(f"polish learning rate back up to {rate:.1e}")
        if i > 0 and leg["normalize_z"] != legs[i - 1]["normalize_z"]:
            note.append("z " + ("divided by its RMS" if leg["normalize_z"] else "read as it is") + " from here")
        parts.append(f"steps {leg['from_step']:,}–{end:,}: `{' '.join(flags)}`" + (f" ({'; '.join(note)})" if note
                                                                                   else ""))
    return "  The shipped generator's calls: " + "; ".join(parts) + ".\n"


def model_card(metrics: dict) -> str:
    """The model card, written from the measured metrics so that its numbers are always those of the shipped files."""
    train, heldout = DATASETS["train"], DATASETS["heldout"]
    ident, gen, enc = (metrics.get(k, {}) for k in ("identity", "generator", "encoder"))
    mix = f"{ident['generator_mix']:.0%}" if ident.get("generator_mix") else "a fraction"
    polish = gen["steps"] - gen["legs"][0]["steps"] if gen.get("legs") else POLISH_STEPS
    bars = {"identity TAR >= 0.95": ident.get("tar", 0) >= 0.95, "generator PSNR >= 24 dB": gen.get("psnr", 0) >= 24,
            "encoder re-render PSNR >= 22 dB": enc.get("rerender_psnr", 0) >= 22,
            "encoder identity similarity >= 0.8": enc.get("id_similarity", 0) >= 0.8}
    missed = [name for name, ok in bars.items() if not ok]
    status = ("all bars met." if not missed else "INTERIM weights, bars not yet met: " + "; ".join(missed)
              + ". Training continues (`python -m tools.world train generator --resume`, or `--init-from "
              "weights/default` without a runs/ folder, then `train identity`, `train encoder --resume`, `export`).")
    return f"""# The embedded default world — model card

Status: {status}

What: three small networks trained on procedural 3D heads (`guide_core/world/heads.py`), so that GUIDE
(Seo et al., CVPR 2024) runs end to end on a CPU without downloading anything. All files are safetensors
(float32) with a JSON config beside each; total {metrics.get("total_size_mb")} MB. Released under the project licence;
the training data are procedural renders, no photos of real people were used.

| file | role in GUIDE | architecture | trained steps |
|---|---|---|---|
| `generator.safetensors` | EG3D generator G_s | {_generator_architecture(gen)} | {gen.get("steps", "-")} |
| `identity.safetensors` | ArcFace (ID loss) and CurricularFace (ID metric) | residual CNN 16-32-64-128, 128-d unit embedding, CosFace (s 32, m 0.3) | {_steps(ident)} |
| `encoder.safetensors` | GOAE encoder | residual CNN 32-64-96-128 -> w+ offset from w_avg (shared w + per-row refinement) | {_steps(enc)} |

**The world's perceptual and FID features are its own.** The LPIPS role is played by the identity net's channel-
normalised feature maps (`WorldPerceptual`), the Inception role by its 128-d pre-normalisation embedding
(`WorldFeatures`); ID metrics use the same identity net for loss and metric. Numbers from this world are
comparable only with each other, never with the paper's FFHQ numbers.

## How it was trained (seeded, resumable; `python -m tools.world ...`)
- data: `render-data` renders {train[0]:,} training people x {train[1]} photos (1 sample per pixel) and
  {heldout[0]:,} held-out people x {heldout[1]} photos (other seed, 2x2 supersampled), 64 px, EG3D cameras (yaw ~
  N(0, 0.3) clipped to ±0.7, pitch ~ N(0, 0.12) clipped to ±0.35, radius 2.7, pivot (0, 0, 0.2), fov 18.837°);
  per-photo expression, lighting and glasses vary. z -> parameters is a fixed map (z has {Z_DIM} dims: identity =
  dims 0-{N_ID - 1}, per-photo = dims {N_ID}-{Z_DIM - 1}).
- `train identity` (stage 1): CosFace on the training people's photos, AdamW 2e-3 cosine, batch 128,
  shift/scale/blur/colour jitter. Only the generator's perceptual loss uses this net (kept in its checkpoint).
- `train generator`: supervised, L1(image 64²) + L1(raw 32²) + L1(depth on the head) + world perceptual,
  Adam 2e-3 (`--lr`), batch 8, first 30 % of the steps at 16² neural rendering; w_avg tracked by the mapping
  network. Then a polish phase (`--polish-steps`, {polish:,} steps here): squared error (x{MSE_WEIGHT:g}) on image
  and raw render instead of L1, no perceptual term, Adam 2e-4 (`--polish-lr`) cosine to zero; PSNR scores squared
  error, and L1 + perceptual place an uncertain edge sharp instead of at its mean.
{_generator_legs(gen)}- `train identity` again (stage 2, the shipped net, from scratch): as stage 1, but {mix} of every batch are the
  trained generator's renders of the training people (2 per person, their z and camera), each next to the photo it
  renders, with a term (weight {ident.get("lambda_pair", 0):g}) pulling the render's embedding onto its photo's. The
  photos-only net scored the generator's own render of a held-out photo's z at 0.60-0.67 to that photo, below two
  different photos of one person (0.80): it judged rendering quality (blur, missing glasses rims), not identity.
  ArcFace does not have this problem with EG3D, which is photoreal. The render-vs-photo verification below checks
  that the net still tells people apart among renders.
- `train encoder`: code regression onto mapping(z) of rendered photos + re-render L1 and identity loss (world
  identity net, weight 0.5) through the frozen generator.
- `export`: writes these files and measures the metrics below on the held-out people.

## Metrics (held-out people, `metrics.json`)
| network | metric | value | bar |
|---|---|---|---|
| identity | TAR at FAR 1 % | {_fmt(metrics, "identity", "tar")} | ≥ 0.95 |
| identity | similarity of two photos of one person / of the generator's render of a photo's z to that photo | {_fmt(metrics, "identity", "genuine_mean")} / {_fmt(metrics, "identity", "render_similarity")} | (no bar) |
| identity | render-vs-photo TAR at FAR 1 % (impostors: a render and another person's photo) / impostor mean | {_fmt(metrics, "identity", "render_tar")} / {_fmt(metrics, "identity", "render_impostor_mean")} | (no bar) |
| generator | PSNR vs procedural render (64 px, random poses){_on(gen)} | {_fmt(metrics, "generator", "psnr", 2, " dB")} | ≥ 24 dB |
| generator | PSNR per yaw −0.5 / 0 / +0.5 (6 people, anti-aliased targets) | {_fmt(metrics, "generator", "psnr_yaw-0.50", 2)} / {_fmt(metrics, "generator", "psnr_yaw+0.00", 2)} / {_fmt(metrics, "generator", "psnr_yaw+0.50", 2, " dB")} | alike across yaws |
| encoder | re-render PSNR{_on(enc)} | {_fmt(metrics, "encoder", "rerender_psnr", 2, " dB")} | ≥ 22 dB |
| encoder | identity similarity of re-render to photo | {_fmt(metrics, "encoder", "id_similarity")} | ≥ 0.8 |

Limitations: 64 px, stylised heads (SDF primitives, painted eyes/brows/lips), one background colour; the identity
net knows only this world. It is a test bed for the unlearning pipeline, not a face model.
"""
