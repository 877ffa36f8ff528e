"""Event handlers of the studio: plain functions of (inputs, session) -> outputs, callable without Gradio running.

They hold no math: every latent, render, loss and metric comes from guide_core (Seo et al. 2024, "Generative
Unlearning for Any Identity"); the handlers decode uploads, keep the per-visitor session and shape outputs. One module
per tab, all built on `common` (the bundle cache, the seam into guide_core, photos, renders and session guards), which
imports none of them:

- `models`: the model selector and the weights panel (a model switch empties the identity list of `identities`);
- `identities`: the Source and UFO tabs (photos in, the identity list, the target at distance d);
- `run`: the Unlearn tab (settings, the streamed run, Cancel);
- `views`: the Multi-view and Identity-clusters tabs;
- `report`: the Report tab.

This package re-exports what the page, the app and the tests call, so `handlers.upload_photo(...)` names the handler
wherever it lives. The constants re-exported here are for reading: a test that changes one patches the module that
uses it (`views.ORBIT_YAWS_DEG`). Each handler returns a NamedTuple whose fields are the event's outputs, in the order the layout
lists them.
"""
from demo.handlers.common import MAX_UPLOAD, UNLEARN_GPU_SECONDS, get_bundle, gpu, gpu_unlearn, load_photo
from demo.handlers.identities import (SourceOut, UFOOut, change_d, d_range, default_d, identity_list, remove_identity,
                                      select_identity, upload_photo)
from demo.handlers.models import available_models, select_model, start_session, weights_panel
from demo.handlers.report import REPORT_FID_SAMPLES, ReportOut, default_audit_steps, report
from demo.handlers.run import DEFAULT_METHOD, RunOut, cancel_run, config_defaults, method_choices, run_unlearning
from demo.handlers.views import (CLUSTER_OTHERS, CLUSTER_YAWS_DEG, ORBIT_YAWS_DEG, OrbitOut, ViewOut, add_others,
                                 identity_clusters, orbit, pose_controls, render_view)
from demo.session import end_session, new_session

__all__ = [
    "CLUSTER_OTHERS", "CLUSTER_YAWS_DEG", "DEFAULT_METHOD", "MAX_UPLOAD", "ORBIT_YAWS_DEG", "REPORT_FID_SAMPLES", "UNLEARN_GPU_SECONDS",
    "OrbitOut", "ReportOut", "RunOut", "SourceOut", "UFOOut", "ViewOut",
    "add_others", "available_models", "cancel_run", "change_d", "config_defaults", "d_range", "default_audit_steps",
    "default_d", "end_session", "get_bundle", "gpu", "gpu_unlearn", "identity_clusters", "identity_list",
    "load_photo", "method_choices", "new_session", "orbit", "pose_controls", "remove_identity", "render_view", "report", "run_unlearning",
    "select_identity", "select_model", "start_session", "upload_photo", "weights_panel",
]
