"""The Report tab: the metrics of the session's chain of runs, the erasure audit, and the run's files to download."""
from __future__ import annotations

from typing import Any, NamedTuple

from demo import plots
from demo.handlers.common import as_codes, get_bundle, gpu, lib, need_unlearned, photo_tensor, source_record
from demo.session import StudioSession

# FID_pre sample count in the studio's report (the paper uses 5,000; the CLI's eval does too).
REPORT_FID_SAMPLES = 64


class ReportOut(NamedTuple):
    """The report's table, its files and the audit's curves."""
    markdown: str
    files: list[str]
    audit_plot: Any = None


def default_audit_steps() -> int:
    """The audit slider's starting value: re-inversion steps per attack."""
    return 20


@gpu
def report(session: StudioSession | None, audit_steps: float, n_fid: int = REPORT_FID_SAMPLES) -> ReportOut:
    """Evaluate and package the latest run.

    ID and ID_others of every identity the chain of runs forgot (each against the original model), the preservation
    metric (with what its features are), the erasure audit of every identity whose photo the session holds; the latest
    run's files.
    """
    from guide_core import runs

    _, metrics = lib()
    session = need_unlearned(session)
    bundle = get_bundle(session.model)
    job = session.job
    held = {i.sha256: i for i in session.identities}
    # Other photos added after the run still count: the records take the session's current ones.
    job.sources = [source_record(held[s["sha256"]]) if s.get("sha256") in held else s for s in job.sources]
    identities = runs.chain_sources({"sources": runs.run_sources(job), "base_run": job.base_run})
    for source in identities:
        if source.get("sha256") in held:
            source["others"] = source_record(held[source["sha256"]])["others"]
    result = metrics.evaluate(bundle, session.generator_u, n_fid=n_fid, identities=identities)
    values = result.to_dict()
    audits = []
    if int(audit_steps) > 0:
        from guide_core import audit
        for source in identities:
            person = held.get(source.get("sha256"))
            if person is not None:
                audits.append((source, audit.erasure_audit(bundle, session.generator_u,
                                                           photo_tensor(bundle, person.aligned),
                                                           as_codes(person.w_u), steps=int(audit_steps))))
    if audits:
        values["audit"] = audit.audit_summary(audits)
    job.metrics = values
    run_dir = session.workdir / "run"
    runs.save_run(run_dir, job, overwrite=True)
    lines = [table.markdown() for table in result.tables()]
    if audits:
        summary = values["audit"]
        lines.append(f"Erasure audit ({summary['steps']} steps per attack; {summary['objective']}): the best identity "
                     f"similarity to the photo that re-inversion reaches in G_s and in G_u.\n\n"
                     + audit.audit_table(audits).markdown())
    notes = [f"{note}." for note in result.notes_text()]
    state = "cancelled" if job.cancelled else "complete"
    markdown = "\n\n".join(lines) + "\n\n" + " ".join(notes) + (f"\n\nRun {state}: {job.steps_done}/{job.cfg.iters} "
                                                              f"iterations, {job.seconds:.1f} s.")
    curves = plots.audit_curves(summary["attacks"], summary["name"]) if audits else plots.audit_curves({})
    return ReportOut(markdown, [str(run_dir / runs.DELTA_FILE), str(run_dir / runs.RUN_JSON)], curves)
