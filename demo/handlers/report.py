"""The Report tab: the metrics of the session's chain of runs, the erasure audit, and the run's files to download."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from demo import plots
from demo.handlers.common import as_codes, get_bundle, gpu, lib, need_unlearned, photo_tensor, source_record
from demo.session import StudioSession

# FID_pre sample count in the studio's report (the paper uses 5,000; the CLI's eval does too).
REPORT_FID_SAMPLES = 64


class ReportOut(NamedTuple):
    """The report's table, its files and the attacker ladder's chart."""
    markdown: str
    files: list[str]
    audit_plot: Any = None


def default_audit_steps() -> int:
    """The audit slider's starting value: Adam steps of each optimisation tier of the ladder."""
    return 20


@gpu
def report(session: StudioSession | None, audit_steps: float, n_fid: int = REPORT_FID_SAMPLES) -> ReportOut:
    """Evaluate and package the latest run.

    ID and ID_others of every identity the chain of runs forgot (each against the original model), the preservation
    metric (with what its features are), the attacker ladder of every identity whose photo the session holds, against
    seeded strangers; the latest run's files.
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
    audited = [(source, held[source["sha256"]]) for source in identities if source.get("sha256") in held]
    ladder_values = None
    if int(audit_steps) > 0 and audited:
        from guide_core import ladder
        strangers, names = ladder.default_strangers(bundle)
        forgotten = torch.cat([photo_tensor(bundle, person.aligned) for _, person in audited])
        budget = ladder.LadderBudget.scaled(int(audit_steps))
        ladder_values = ladder.attack_ladder(bundle, session.generator_u, forgotten, strangers,
                                             [source["name"] for source, _ in audited], names,
                                             budget=budget).to_dict()
        values["audit"] = ladder_values
    job.metrics = values
    run_dir = session.workdir / "run"
    runs.save_run(run_dir, job, overwrite=True)
    lines = [table.markdown() for table in result.tables()]
    if ladder_values is not None:
        lines.append(f"**Attacker ladder** (strangers: {', '.join(ladder_values['strangers'])}; held = the forgotten "
                     f"person below the impostor threshold {ladder_values['threshold']:.2f} in G_u while the "
                     f"strangers stay within {ladder_values['stranger_tolerance']:.2f} of G_s). "
                     f"{ladder_values['sentence']}\n\n" + ladder.ladder_table(ladder_values).markdown())
    notes = [f"{note}." for note in result.notes_text()]
    state = "cancelled" if job.cancelled else "complete"
    markdown = "\n\n".join(lines) + "\n\n" + " ".join(notes) + (f"\n\nRun {state}: {job.steps_done}/{job.cfg.iters} "
                                                              f"iterations, {job.seconds:.1f} s.")
    return ReportOut(markdown, [str(run_dir / runs.DELTA_FILE), str(run_dir / runs.RUN_JSON)],
                     plots.ladder_chart(ladder_values))
