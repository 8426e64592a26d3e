"""Evaluators' overrides of leaf points, kept in the database with who, when and why.

An override replaces what the sheets and the campaign gave one leaf of one agency (say a
reply the matcher could not see, or a channel that worked though its probe bounced). A new
override of the same leaf closes the previous one; a withdrawal closes it too. Nothing is
deleted, so the report can show the decision next to what it replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from mailprobe.errors import InputError
from mailprobe.models import AgencyRow
from mailprobe.models_review import ScoreOverrideRow
from mailprobe.rubric import Rubric
from mailprobe.score import Override
from mailprobe.store import Store

__all__ = ["OverrideRecord", "active_overrides", "add_override", "list_overrides",
           "withdraw_override"]

_EPS = 1e-9


@dataclass(frozen=True)
class OverrideRecord:
    id: int
    rubric: str
    agency: str
    leaf: str
    points: float
    reason: str
    by: str
    at: datetime
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None
    withdrawn_reason: str | None = None

    def as_override(self) -> Override:
        return Override(self.agency, self.leaf, self.points, self.reason, by=self.by)


def _record(row: ScoreOverrideRow) -> OverrideRecord:
    return OverrideRecord(row.id, row.rubric, row.agency, row.leaf, row.points, row.reason,
                          row.by, row.at, row.withdrawn_at, row.withdrawn_by,
                          row.withdrawn_reason)


def add_override(store: Store, rubric: Rubric, agency: str, leaf: str, points: float,
                 reason: str, by: str) -> OverrideRecord:
    """Record an override (closing the leaf's previous one); checked against the rubric."""
    j = rubric.leaf_index(leaf, location="--leaf")
    target = rubric.leaves[j]
    if not 0 <= points <= target.cap + _EPS:
        raise InputError(f"override out of range for {target.key}", location="--points",
                         expected=f"0..{target.cap:g}", got=points)
    ratio = points / target.step
    if abs(ratio - round(ratio)) > 1e-6:
        raise InputError(f"override is not a step of {target.step:g} for {target.key}",
                         location="--points", expected=f"a multiple of {target.step:g}",
                         got=points)
    if not reason.strip():
        raise InputError("an override needs a reason", location="--reason",
                         expected="why the computed points are wrong")
    if not by.strip():
        raise InputError("an override needs the evaluator's name", location="--by",
                         expected="a name")
    now = store.clock.now()
    with store.session() as s:
        known = set(s.scalars(select(AgencyRow.name)))
        if known and agency not in known:
            raise InputError(f"no agency {agency!r} in the directory", location="--agency",
                             expected="an agency name as imported (`mailprobe directory show`)",
                             got=agency)
        for old in s.scalars(select(ScoreOverrideRow).where(
                ScoreOverrideRow.rubric == rubric.name, ScoreOverrideRow.agency == agency,
                ScoreOverrideRow.leaf == target.key, ScoreOverrideRow.withdrawn_at.is_(None))):
            old.withdrawn_at, old.withdrawn_by = now, by
            old.withdrawn_reason = "superseded by a newer override"
        row = ScoreOverrideRow(rubric=rubric.name, agency=agency, leaf=target.key,
                               points=float(points), reason=reason.strip(), by=by.strip(),
                               at=now, withdrawn_at=None)
        s.add(row)
        s.flush()
        return _record(row)


def withdraw_override(store: Store, override_id: int, by: str, reason: str) -> OverrideRecord:
    """Close an override: the computed points count again; the record stays."""
    if not reason.strip():
        raise InputError("a withdrawal needs a reason", location="--reason", expected="a reason")
    with store.session() as s:
        row = s.get(ScoreOverrideRow, override_id)
        if row is None:
            raise InputError(f"no override {override_id}", location="ID",
                             expected="an id from `mailprobe override list`", got=override_id)
        if row.withdrawn_at is not None:
            raise InputError(f"override {override_id} was already withdrawn", location="ID",
                             expected="an active override", got=override_id)
        row.withdrawn_at, row.withdrawn_by = store.clock.now(), by
        row.withdrawn_reason = reason.strip()
        return _record(row)


def list_overrides(store: Store, rubric: str | None = None, *,
                   include_withdrawn: bool = False) -> list[OverrideRecord]:
    query = select(ScoreOverrideRow).order_by(ScoreOverrideRow.id)
    if rubric is not None:
        query = query.where(ScoreOverrideRow.rubric == rubric)
    if not include_withdrawn:
        query = query.where(ScoreOverrideRow.withdrawn_at.is_(None))
    with store.session(write=False) as s:
        return [_record(r) for r in s.scalars(query)]


def active_overrides(store: Store, rubric: str) -> list[Override]:
    """The overrides the engine applies for ``rubric`` (one per agency and leaf)."""
    return [r.as_override() for r in list_overrides(store, rubric)]
