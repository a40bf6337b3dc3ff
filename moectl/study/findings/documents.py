"""Whether a study's results rest on enough eval documents for a verdict: documents per domain
and the 'too few documents' sentence with the counts (fewer than `MIN_DOCUMENTS` in a domain)."""

from __future__ import annotations

import numpy as np

from moectl.analysis.bootstrap import MIN_DOCUMENTS, unit_strata
from moectl.analysis.results import EvaluationResult
from moectl.study.findings.seed_combination import block_units


def documents_per_domain(result: EvaluationResult) -> dict[str, int]:
    """Eval documents (units) per domain with blocks, named as in `domain_loss`."""
    if not result.block_domain:
        return {}
    ids, sizes = np.unique(
        unit_strata(np.array(result.block_domain), block_units(result)), return_counts=True
    )
    names = list(result.domain_loss)
    if len(names) != len(ids):
        names = [f"domain {i}" for i in ids]
    return dict(zip(names, (int(n) for n in sizes), strict=True))


def document_shortage(results: list[EvaluationResult]) -> str | None:
    """The 'too few documents' sentence with the counts, when any result has a domain with
    fewer than MIN_DOCUMENTS eval documents; None when every domain has enough."""
    for result in results:
        counts = documents_per_domain(result)
        if counts and min(counts.values()) < MIN_DOCUMENTS:
            listed = ", ".join(f"{domain} {n}" for domain, n in counts.items())
            return (
                f"Too few eval documents for a verdict ({listed}; at least {MIN_DOCUMENTS} per "
                "domain): an interval over so few documents is not calibrated."
            )
    return None
