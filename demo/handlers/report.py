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


def _number(value: float | None) -> str:
    """A metric as the report's tables show it."""
    return "n/a" if value is None else f"{value:.4f}"


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
    rows = [("ID (lower = identity gone; G_s vs G_u renders of w_u, 11 views; mean over this run's identities)",
             result.id),
            ("ID_others (other photos of this run's identities)", result.id_others),
            (f"FID_pre (G_s vs G_u, {result.n_fid} samples; preservation)", result.fid_pre),
            ("ΔFID_real", result.delta_fid_real)]
    if audits:
        summary = values["audit"]
        rows += [(f"audit: best identity reached by re-inversion into G_s (best of {len(summary['attacks'])} "
                  f"attacks, {summary['steps']} steps each; {summary['name']}: the identity recovered best from G_u)",
                  summary["best_id_before"]),
                 (f"audit: best identity reached by re-inversion into G_u (attack {summary['strongest_attack']})",
                  summary["best_id_after"]),
                 ("audit: fraction of the identity erased", summary["erased"])]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {_number(value)} |" for name, value in rows]
    lines += ["", "| identity | forgotten in | ID | ID_others |", "|---|---|---|---|"]
    for row in result.per_identity:
        photos = f" ({row['n_others']} photo{'s' if row['n_others'] != 1 else ''})" if row["n_others"] else ""
        lines.append(f"| {row['name']} | run {row['run'] + 1}{' (earlier run)' if row['earlier'] else ''} | "
                     f"{_number(row['id'])} | {_number(row['id_others'])}{photos} |")
    if audits:
        names = [pair.name for pair in audits[0][1].attacks]
        lines += ["", "| identity | attack | best ID from G_s | best ID from G_u | erased |", "|---|---|---|---|---|"]
        for s, a in audits:
            lines += [f"| {s['name']} | {pair.name} | {_number(pair.before.best_id)} | {_number(pair.after.best_id)} | "
                      f"{_number(pair.erased)} |" for pair in a.attacks]
            lines.append(f"| {s['name']} | **best of {len(names)}** | {_number(a.before.best_id)} | "
                         f"{_number(a.after.best_id)} | {_number(a.erased)} |")
    notes = [f"Features: {result.feature_note or bundle.feature_note}."] + [f"{note}." for note in result.notes]
    state = "cancelled" if job.cancelled else "complete"
    markdown = "\n".join(lines) + "\n\n" + " ".join(notes) + (f"\n\nRun {state}: {job.steps_done}/{job.cfg.iters} "
                                                              f"iterations, {job.seconds:.1f} s.")
    curves = plots.audit_curves(summary["attacks"], summary["name"]) if audits else plots.audit_curves({})
    return ReportOut(markdown, [str(run_dir / runs.DELTA_FILE), str(run_dir / runs.RUN_JSON)], curves)
