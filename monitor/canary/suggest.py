"""A deployment that does not exist is often a typo: when the same resource has a deployment with a close
name, the hint of `deployment_not_found` says "did you mean ...?". The kind stays what the classifier
said; only the hint, built for this target, grows."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import replace

from .results import FailureKind, Verdict

CUTOFF = 0.8  # difflib's ratio: one letter off in a name of 10 or more letters is well above it


def close_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `name` (never `name` itself), or None when none is close."""
    others = sorted({c for c in candidates if c != name})
    found = difflib.get_close_matches(name, others, n=1, cutoff=CUTOFF)
    return found[0] if found else None


def with_suggestion(verdict: Verdict, deployment: str, siblings: Iterable[str]) -> Verdict:
    """The verdict, its hint led by "did you mean ...?" when it is deployment_not_found and one of the
    resource's other deployments (`siblings`) has a close name."""
    if verdict.kind is not FailureKind.DEPLOYMENT_NOT_FOUND:
        return verdict
    match = close_name(deployment, siblings)
    if match is None:
        return verdict
    return replace(verdict, hint=f'Did you mean "{match}"? The same resource has a deployment of that name. '
                                 f"{verdict.hint}")
