"""The guide studio: a Gradio page over guide_core (app, layout, event handlers, figures and per-visitor sessions)."""
