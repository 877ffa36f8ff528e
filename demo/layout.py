"""The studio's page: components and their wiring to demo.handlers. Layout only; the handlers hold the behaviour."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gradio as gr
from gradio import image_utils

from demo import handlers

# Which LTUConfig fields the Unlearn tab shows, with the paper's symbols as labels; True = in the "advanced" section.
# Values and ranges always come from LTUConfig itself (its defaults are the paper's, Seo et al. 2024 Sec. 4.1;
# its field metadata carries the help text and slider range), so no default is written down twice.
CONFIG_LABELS: dict[str, tuple[str, bool]] = {
    "iters": ("iterations", False),
    "alpha_max": ("α_max (adjacency radius)", False),
    "n_adj": ("N_a (adjacent latents per step)", False),
    "n_glob": ("N_g (global latents per step)", False),
    "n_glob_near": ("N_near (of N_g: people nearest to w_u; not in the paper)", True),
    "n_adj_sources": ("N_a sources (identities with adjacency pairs per step, 0 = all)", True),
    "n_glob_forgotten": ("N_forgotten (identities of earlier runs kept forgotten per step)", True),
    "identity_scaling": ("s (N identities at once: lr × N^s, λ_glob × N^-s)", True),
    "lambda_l2": ("λ_L2 (tri-plane L2)", True),
    "lambda_per": ("λ_per (perceptual)", True),
    "lambda_id": ("λ_id (identity)", True),
    "lambda_adj": ("λ_adj (adjacency loss)", True),
    "lambda_glob": ("λ_glob (global loss)", True),
    "adversarial_sources": ("robust: attack latents kept per identity (0 = the paper; not in the paper)", True),
    "attack_every": ("robust: iterations between re-inversion attacks", True),
    "attack_steps": ("robust: steps per attack", True),
    "attack_chains": ("robust: attacks per identity at once (from w_u, w̄, random people)", True),
    "lambda_adv": ("λ_adv (robust: weight of the attack latents' loss)", True),
    "bank_codes": ("bank then erase: recovering codes banked per identity (0 = off; not in the paper)", True),
    "bank_strangers": ("bank then erase: strangers' codes held to G_s", True),
    "lambda_bank": ("λ_bank (bank then erase: weight of the banked codes' loss)", True),
    "lr": ("Adam learning rate", True),
    "preview_every": ("preview every k iterations", True),
    "seed": ("seed", True),
}
# Heavy events share one queue slot on the accelerator: one heavy job at a time, with the position in line visible.
HEAVY = dict(concurrency_id="heavy", concurrency_limit=1)
# Light events (d slider, camera) never wait behind a heavy job.
# While a slider is dragged only the latest value is rendered (trigger_mode "always_last").
LIGHT = dict(concurrency_limit=None, show_progress="minimal", trigger_mode="always_last")
INTRO = """
# guide studio — generative identity unlearning
Upload a photo of each person to forget; GUIDE (Seo et al., CVPR 2024) inverts each to **w_u**, picks a de-identified
target **w_t** on the far side of the mean face (UFO), and fine-tunes a copy of the 3D generator so that every w_u
renders as its w_t while every other face stays as it was. People added after a run are forgotten on top of it. Your
unlearned generator lives in **your session only**.
"""


def photo_input(**kwargs: Any) -> gr.Image:
    """The upload widget: an Image whose preprocessing hands the raw uploaded file to the handler.

    The handler decodes it with guide_core.faces and can say precisely what is wrong with a bad file (Gradio's own
    decoding would fail with a generic error before any handler runs).
    """
    # Patched per instance: a gr.Image subclass would make Gradio write a .pyi stub next to this module at import time.
    component = gr.Image(type="filepath", image_mode=None, **kwargs)

    def raw_file(payload) -> str | None:
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):  # webcam snapshots may arrive as data URLs
            return image_utils.decode_base64_to_file(payload.url, component.GRADIO_CACHE, "png")
        return payload.path

    component.preprocess = raw_file
    return component


def config_sliders(config_cls: Any, advanced: bool, defaults: Any = None) -> tuple[list[str], list[gr.Component]]:
    """Sliders generated from the LTUConfig dataclass; returns (field names, components) in one fixed order."""
    defaults = defaults if defaults is not None else config_cls()
    names, components = [], []
    for field in dataclasses.fields(config_cls):
        if field.name not in CONFIG_LABELS or CONFIG_LABELS[field.name][1] != advanced:
            continue
        label, _ = CONFIG_LABELS[field.name]
        value, info = getattr(defaults, field.name), field.metadata.get("help")
        names.append(field.name)
        if "range" in field.metadata:
            lo, hi = field.metadata["range"]
            lo, hi = min(lo, value), max(hi, value)  # a model's own default may lie outside the paper's range
            step = 1 if field.type in (int, "int") else (hi - lo) / 200
            components.append(gr.Slider(lo, hi, value=value, step=step, label=label, info=info,
                                        elem_id=f"cfg-{field.name}", render=False))
        else:
            components.append(gr.Number(value=value, label=label, info=info, precision=0,
                                        elem_id=f"cfg-{field.name}", render=False))
    return names, components


def method_sliders() -> tuple[list[str], list[tuple[str, list[gr.Component]]]]:
    """For each method with settings of its own (LEGATO's adapters, SUGAR's trigger and EWC), sliders generated from
    its settings dataclass: (field names, [(method, components)])."""
    from guide_core.engine.method import available_methods, own_settings

    names, groups = [], []
    for method in available_methods():
        components = []
        for field in own_settings(method):
            lo, hi = field.metadata["range"]
            step = 1 if field.type in (int, "int") else (hi - lo) / 200
            components.append(gr.Slider(lo, hi, value=field.default, step=step, label=field.name,
                                        info=field.metadata.get("help"), elem_id=f"cfg-{field.name}", render=False))
            names.append(field.name)
        if components:
            groups.append((method, components))
    return names, groups


def build(examples: list[str], models: list[str], default_model: str, config_cls: Any, defaults: Any) -> gr.Blocks:
    """The whole page."""
    with gr.Blocks(title="guide studio") as app:
        session = gr.State(None, delete_callback=handlers.end_session)
        gr.Markdown(INTRO)
        with gr.Row():
            model = gr.Dropdown(models, value=default_model, label="generator", scale=1, elem_id="model")
            status = gr.Markdown("Pick a model, then upload a photo or click an example.", elem_id="status")
        with gr.Accordion("Weights: what is installed and how to add the rest", open=False):
            weights_md = gr.Markdown(handlers.weights_panel(), elem_id="weights")

        with gr.Tab("1 · Source"):
            with gr.Row():
                photo = photo_input(sources=["upload", "webcam", "clipboard"],
                                    label="photo of a person to forget (each photo adds one)", elem_id="photo",
                                    height=300)
                detected = gr.Image(label="detected face", interactive=False, height=300, elem_id="detected")
                aligned = gr.Image(label="aligned crop", interactive=False, height=300, elem_id="aligned")
                inversion = gr.Image(label="inversion: G_s(w_u)", interactive=False, height=300, elem_id="inversion")
            with gr.Row():
                identity = gr.Dropdown([], value=None, label="identities to forget: the tabs show the selected one",
                                       elem_id="identity", scale=3)
                remove = gr.Button("Remove the selected identity", elem_id="remove-identity", scale=1)
            identities = gr.Gallery(label="listed identities: G_s(w_u) and state", columns=6, height=180,
                                    elem_id="identities")
            if examples:
                gr.Examples(examples=[[path] for path in examples], inputs=[photo], label="examples (renders of the "
                            "embedded world: people who do not exist)")

        with gr.Tab("2 · UFO target"):
            with gr.Row():
                with gr.Column(scale=1):
                    d = gr.Slider(*handlers.d_range(), value=handlers.default_d(), step=0.5,
                                  label="d: distance of w_t beyond the mean face (0 = mean face, < 0 = toward w_u)",
                                  elem_id="d")
                    target = gr.Image(label="target: G_s(w_t)", interactive=False, height=280, elem_id="target")
                ufo_plot = gr.Plot(label="latent geometry", elem_id="ufo-plot", scale=2)

        with gr.Tab("3 · Unlearn"):
            method = gr.Radio(list(handlers.method_choices()), value=handlers.DEFAULT_METHOD, label="method",
                              info="; ".join(f"{k}: {v}" for k, v in handlers.method_choices().items()),
                              elem_id="method")
            basic_names, basic = config_sliders(config_cls, advanced=False, defaults=defaults)
            with gr.Row():
                for slider in basic:
                    slider.render()
            with gr.Accordion("advanced: loss weights, learning rate, seed", open=False):
                advanced_names, advanced = config_sliders(config_cls, advanced=True, defaults=defaults)
                with gr.Row():
                    for slider in advanced:
                        slider.render()
            own_names, own_groups = method_sliders()
            for method_name, components in own_groups:
                with gr.Accordion(f"{method_name} settings (used with method {method_name})", open=False):
                    with gr.Row():
                        for slider in components:
                            slider.render()
            own = [component for _, components in own_groups for component in components]
            start_over = gr.Checkbox(False, label="start over from the original model (forget every listed identity "
                                     "in one fresh run; otherwise identities added since the last run are forgotten "
                                     "on top of it)", elem_id="start-over")
            with gr.Row():
                run = gr.Button("Run unlearning", variant="primary", elem_id="run")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            run_status = gr.Markdown("", elem_id="run-status")
            # Cancel answers here, not in the run's status: its reply can arrive after the run's own last status
            # ("Cancelled after ...") and would overwrite it.
            cancel_status = gr.Markdown("", elem_id="cancel-status")
            with gr.Row():
                loss_plot = gr.Plot(label="losses", elem_id="loss-plot", scale=2)
                previews = gr.Gallery(label="previews per identity: source, target, G_u(w_u)", columns=3, height=260,
                                      elem_id="previews", scale=1)

        with gr.Tab("4 · Multi-view check"):
            others = gr.File(file_count="multiple", label="other photos of the selected identity (optional)",
                             elem_id="others", type="filepath")
            with gr.Row():
                yaw = gr.Slider(-45, 45, value=0, step=1, label="yaw (degrees)", elem_id="yaw")
                pitch = gr.Slider(-25, 25, value=0, step=1, label="pitch (degrees)", elem_id="pitch")
            with gr.Row():
                before = gr.Image(label="before: G_s(w_u) of the selected identity", interactive=False, height=256,
                                  elem_id="before")
                after = gr.Image(label="after: G_u(w_u) of the selected identity", interactive=False, height=256,
                                 elem_id="after")
            others_views = gr.Gallery(label="the other identities and other photos: before | after at this view",
                                      columns=4, height=220, elem_id="others-views")
            orbit_button = gr.Button("Orbit and identity per view", elem_id="orbit")
            before_strip = gr.Image(label="orbit before (G_s): one row per identity, in list order", interactive=False,
                                    elem_id="orbit-before")
            after_strip = gr.Image(label="orbit after (G_u): one row per identity, in list order", interactive=False,
                                   elem_id="orbit-after")
            id_plot = gr.Plot(label="identity per view", elem_id="id-plot")

        with gr.Tab("5 · Identity clusters"):
            clusters_button = gr.Button("Compute t-SNE of identity embeddings", elem_id="clusters")
            clusters_plot = gr.Plot(label="identity clusters before / after", elem_id="clusters-plot")

        with gr.Tab("6 · Report"):
            audit_steps = gr.Slider(0, 200, value=handlers.default_audit_steps(), step=10,
                                    label="attacker ladder: steps of each optimisation tier (0 = skip the audit)",
                                    elem_id="audit-steps")
            report_button = gr.Button("Evaluate and package the run", elem_id="report")
            report_md = gr.Markdown("", elem_id="report-md")
            audit_plot = gr.Plot(label="attacker ladder: the forgotten person and the strangers per tier",
                                 elem_id="audit-plot")
            downloads = gr.File(label="delta.safetensors + run.json", file_count="multiple", interactive=False,
                                elem_id="downloads")

        # --- wiring -------------------------------------------------------------------------------------------------
        source_outputs = [session, status, detected, aligned, inversion, target, ufo_plot, identity, identities]
        views = dict(fn=handlers.render_view, inputs=[yaw, pitch, session], outputs=[before, after, others_views])
        app.load(handlers.start_session, inputs=[session, model], outputs=[session, status], **LIGHT
                 ).then(handlers.pose_controls, inputs=[model], outputs=[yaw, pitch], **LIGHT)
        model.change(handlers.select_model, inputs=[model, session],
                     outputs=[session, status, weights_md, detected, aligned, inversion, target, ufo_plot, identity,
                              identities], **HEAVY
                     ).then(handlers.pose_controls, inputs=[model], outputs=[yaw, pitch], **LIGHT)
        photo.change(handlers.upload_photo, inputs=[photo, model, d, session], outputs=source_outputs, **HEAVY
                     ).then(**views, **LIGHT)
        identity.input(handlers.select_identity, inputs=[identity, d, session], outputs=source_outputs, **LIGHT
                       ).then(**views, **LIGHT)
        remove.click(handlers.remove_identity, inputs=[identity, d, session], outputs=source_outputs, **LIGHT
                     ).then(**views, **LIGHT)
        d.change(handlers.change_d, inputs=[d, session], outputs=[session, target, ufo_plot], **LIGHT)
        config_names = [*basic_names, *advanced_names, *own_names]

        def run_from_sliders(session_value, d_value, start_over_value, method_value, *values, progress=gr.Progress()):
            """Sliders arrive positionally; the handler takes them as a {settings field: value} mapping."""
            yield from handlers.run_unlearning(session_value, d_value, dict(zip(config_names, values)), progress,
                                               start_over=bool(start_over_value), method=method_value)

        run_event = run.click(run_from_sliders, inputs=[session, d, start_over, method, *basic, *advanced, *own],
                              outputs=[session, run_status, loss_plot, previews], **HEAVY)
        cancel.click(handlers.cancel_run, inputs=[session], outputs=[cancel_status], queue=False)
        run.click(lambda: "", outputs=[cancel_status], queue=False)  # a new run clears the last Cancel's reply
        others.upload(handlers.add_others, inputs=[others, session], outputs=[session, status, others_views], **HEAVY)
        for slider in (yaw, pitch):
            slider.change(**views, **LIGHT)
        run_event.then(**views, **LIGHT).then(handlers.identity_list, inputs=[session], outputs=[identity, identities],
                                              **LIGHT)
        orbit_button.click(handlers.orbit, inputs=[session], outputs=[before_strip, after_strip, id_plot], **HEAVY)
        clusters_button.click(handlers.identity_clusters, inputs=[session], outputs=[clusters_plot], **HEAVY)
        report_button.click(handlers.report, inputs=[session, audit_steps], outputs=[report_md, downloads, audit_plot],
                            **HEAVY)
    return app


def example_paths(folder: Path) -> list[str]:
    """The example photos in a folder, sorted."""
    return sorted(str(p) for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
