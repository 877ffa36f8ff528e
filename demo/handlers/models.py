"""The model selector and the weights panel: which generators the page offers, and what is installed."""
from __future__ import annotations

import gradio as gr

from demo.handlers.common import get_bundle, gpu, lib
from demo.handlers.identities import empty_ufo_figure, identity_list
from demo.session import StudioSession, new_session


def available_models() -> list[str]:
    """Models the selector offers: the default world always, released ones only when their files are installed."""
    registry, _ = lib()
    from guide_core import weights

    names = []
    for name in registry.available_models():
        if name == "default":
            names.append(name)
            continue
        try:
            if all(weights.is_installed(item) for item in registry.required_weights(name)):
                names.append(name)
        except Exception:  # noqa: BLE001 - a name the manifest does not know is simply not offered
            continue
    return names


def weights_panel() -> str:
    """The weights panel: guide_core.weights.status() as a table plus the install hint of every missing file."""
    try:
        from guide_core import weights

        rows = weights.status()
    except Exception as error:  # noqa: BLE001 - the panel reports, it never takes the page down
        return f"The weights manager could not read the manifest: {error}"
    from guide_core.tables import Table

    text = Table(*weights.status_table(rows)).markdown()
    hints = [f"- `{row.name}`: {row.hint}" for row in rows if not row.installed and row.hint]
    if hints:
        text += "\n\n**How to add the missing files** (`python -m guide_core weights status` says the same):\n" + \
            "\n".join(hints)
    return text


def start_session(session: StudioSession | None, model: str) -> tuple[StudioSession, str]:
    """Page load: a fresh private session bound to the selected model."""
    session = session or new_session()
    session.model = model
    try:
        get_bundle(model)
    except gr.Error as error:
        return session, f"⚠️ {error.message} See the weights panel below."
    return session, f"Model **{model}** selected. Upload a photo or click an example."


@gpu
def select_model(model: str, session: StudioSession | None):
    """Model switch: identities, codes and the unlearned generators belong to the old model, so they are dropped."""
    session = session or new_session()
    get_bundle(model)
    previous = session.model
    session.reset(model)
    note = f"Model **{model}** loaded." + (" Upload the photos again for this model." if previous else "")
    return session, note, weights_panel(), None, None, None, None, empty_ufo_figure(), *identity_list(session)
