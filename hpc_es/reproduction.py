"""docs/REPRODUCTION.md, generated from the committed archives alone.

:func:`generate` loads an archive directory (:class:`hpc_es.claims.Evidence`), runs every
claim of :mod:`hpc_es.paper_claims` on it and renders the records: the paper's claims with the
paper's value, ours, how ours was obtained, the statistics and a verdict; the claims not
assessed here with the command that makes their runs; the questions beyond the paper; the
verdict rules. The text carries no date, timing or machine path, so the same archives give
the same bytes (a test regenerates the committed file and fails on any difference). Nothing
here trains, times or knows MPI.
"""
from hpc_es import claims as claims_mod, paper_claims
from hpc_es.claims import HOW, RULES

INTRO = ("Every number below is computed by `hpc_es.paper_claims` from the archived runs and records in "
         "`{root}` (`hpc-es archive`: config, metadata and history of each run, no theta; JSON written by "
         "the benchmarks). The paper's numbers come from `hpc_es.paper`. "
         "No number is typed by hand: "
         "regenerate with `hpc-es reproduction {root} --write docs/REPRODUCTION.md`; "
         "`tests/test_reproduction.py` fails when this file and the archives disagree. Each claim says how our "
         "number was obtained; a verdict says no more than that way allows (rules at the end). Numbers "
         "not measured here are labelled as the paper's or as projections.")
NO_TEST = "no test: a measurement (against our theory where one is shown), not a comparison of methods"


def _costs(ev):
    """The projection table: each paper-scale preset as its Slurm script runs it, from the
    archived per-unit costs (never timed here)."""
    from hpc_es import costs
    record = ev.record(paper_claims.UNITS)
    head = ["## What the paper-scale runs would cost (projection)", ""]
    if record is None:
        return head + [f"(no per-unit costs in the archives: {paper_claims.UNITS} is missing)"]
    lines = head + [f"Projected by `hpc_es.costs` (our model) from the per-unit costs in `{paper_claims.UNITS}` "
                    f"(one core of this project's development VM) and collectives {costs.Network().source}; "
                    "`hpc-es plan PRESET --ranks R` gives other rank counts. Projections, not measurements.", "",
                    "| preset | ranks | runs | wall time per run | memory per node | core-hours (all runs) |",
                    "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in costs.paper_scale():
        try:
            [(_, _, ranks, runs, p, hours)] = costs.full_scale([name], record["units"])
        except KeyError as missing:  # a unit this preset needs was not measured
            lines.append(f"| `{name}` | - | - | (no per-unit cost {missing}) | - | - |")
            continue
        lines.append(f"| `{name}` | {ranks} | {runs} | {costs.hms(p.wall)} | {p.memory_per_node / 2**30:.1f} GiB | "
                     f"{hours:,.1f} |")
    return lines


def generate(root, label=None):
    """The markdown of the report from the archives under ``root`` (named ``label`` in the text)."""
    ev = claims_mod.Evidence.load(root)
    label = label or root
    paper = [c for fn in paper_claims.PAPER for c in fn(ev)]
    beyond = [c for fn in paper_claims.BEYOND for c in fn(ev)]
    assessed = [c for c in paper if c.verdict != "not assessed"]
    missing = [c for c in paper if c.verdict == "not assessed"]
    lines = ["# Reproduction: the paper's claims beside ours", "",
             INTRO.format(root=label), "",
             f"Evidence: {len(ev.runs)} finished runs" + (f" ({len(ev.unfinished)} unfinished, left out: "
                                                          f"{', '.join(sorted(ev.unfinished))})" if ev.unfinished else "")
             + ".", "", "## The paper's claims", "",
             "| claim | paper | ours | how obtained | statistics | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {c.what} ({c.where}) | {c.paper} | {c.ours} | {HOW[c.how]} | {c.statistics or '-'} | "
              f"**{c.verdict}** |" for c in assessed]
    lines += ["", "## Not assessed here, and what would assess them", ""]
    lines += [f"- {c.what} ({c.where}; paper: {c.paper}): {c.remake}" for c in missing] or ["- (none)"]
    lines += ["", "## Beyond the paper (ours)", "",
              "| question | the paper | ours | how obtained | statistics |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {c.what} | {c.paper} | {c.ours} | {HOW[c.how]} | {c.statistics or NO_TEST} |" for c in beyond]
    lines += ["", *_costs(ev), "", "## The paper's words", ""]
    seen = set()
    for c in paper:
        if c.key not in seen and c.quote:
            seen.add(c.key)
            lines.append(f"- {c.what} ({c.where}): \"{c.quote}\"")
    lines += ["", "## How a verdict is reached (ours)", ""]
    lines += [f"- **{key}**: {text}." for key, text in RULES.items()]
    lines += ["- An instrument (first-order ES, the proxy, or real ES measured at thetas another method reached) gives "
              "**consistent via an instrument** or **inconsistent via an instrument**, never **reproduced**; so does a "
              "different net or length, except an ordering, which is at most **reproduced in ordering only**; a real "
              "run smaller than the paper's gives at most **reproduced at local scale**; a projection **projected "
              "only**; a claim the paper states without what we would need to compare (e.g. which iterations it "
              "averaged) **not comparable**.",
              "- Gaps are the instrument's (or the proxy's) accuracy minus ES's, in points; a seed spread is the "
              "standard deviation over seeds (ddof 1); r is the rank-biserial correlation.",
              "", "Ways of obtaining a number, most direct first: " + "; ".join(
                  v for k, v in HOW.items() if k != "none") + ".", "", "## Sources", ""]
    sources = [f"- {c.what} ({HOW[c.how]}): {', '.join(f'`{s}`' for s in c.sources)}" for c in paper + beyond
               if c.sources]
    return "\n".join(lines + list(dict.fromkeys(sources))) + "\n"
