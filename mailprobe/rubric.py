"""Indicator systems as data: load a rubric TOML, validate its tree, resolve leaf names."""

from __future__ import annotations

import hashlib
import itertools
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mailprobe.errors import ConfigError, RubricError
from mailprobe.paths import config_dir

__all__ = [
    "Group",
    "Leaf",
    "Observation",
    "ObservationKind",
    "ProbeMeasure",
    "RateMethod",
    "Rubric",
    "RuleKind",
    "Stage",
    "Threshold",
    "load_rubric",
    "parse_rubric",
    "rubric_path",
]

_EPS = 1e-9


class RuleKind(StrEnum):
    JUDGED = "judged"
    CRITERIA = "criteria"
    DEDUCTIONS = "deductions"
    PER_ITEM = "per_item"
    PROBE = "probe"


class ObservationKind(StrEnum):
    CRITERION = "criterion"  # met or not (0/1)
    ITEM = "item"  # a count, each worth points
    DEDUCTION = "deduction"  # a count of defects, each costing points


class RateMethod(StrEnum):
    WEIGHTED = "weighted"  # points earned over points possible
    UNWEIGHTED = "unweighted"  # plain mean of the members' rates

    @property
    def label(self) -> str:
        if self is RateMethod.WEIGHTED:
            return "加权法（得分之和 ÷ 满分之和）"
        return "简单平均法（各下级指标得分率的算术平均）"


@dataclass(frozen=True)
class Observation:
    """Something an evaluator can record instead of points: a criterion met, a count."""

    name: str
    kind: ObservationKind
    points: float  # signed: what one unit adds to the leaf (negative for deductions)
    max_count: int | None  # 1 for a criterion; None when unbounded
    text: str = ""
    probe_part: bool = False  # replaced by the campaign's measure once probes exist
    elements: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeMeasure:
    """The part of a leaf that the email campaign measures."""

    measure: str
    points: float
    text: str = ""


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    weight: float
    rule: RuleKind
    step: float
    cap: float
    base: float  # the score before observations: the weight for deductions, else 0
    observations: tuple[Observation, ...] = ()
    probe: ProbeMeasure | None = None
    text: str = ""
    source: str = ""
    note: str = ""

    @property
    def key(self) -> str:
        return "/".join(self.path)

    @property
    def name(self) -> str:
        return self.path[-1]

    def observation(self, name: str) -> Observation | None:
        for obs in self.observations:
            if obs.name == name:
                return obs
        return None

    def score(self, counts: Mapping[str, float]) -> float:
        """Apply the rule to what was observed: clamp(base + sum(points x count), 0, cap)."""
        total = self.base
        for obs in self.observations:
            total += obs.points * counts.get(obs.name, 0.0)
        return min(max(total, 0.0), self.cap)


@dataclass(frozen=True)
class Group:
    path: tuple[str, ...]
    weight: float
    leaf_indices: tuple[int, ...]
    stated_weight: float | None = None
    note: str = ""
    source: str = ""

    @property
    def key(self) -> str:
        return "/".join(self.path)

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def depth(self) -> int:
        return len(self.path)


@dataclass(frozen=True)
class Stage:
    name: str
    lower: float  # inclusive; the upper bound is the next stage's lower (exclusive)


@dataclass(frozen=True)
class Threshold:
    """A count the report publishes: how many sites scored at least (or above) a value."""

    of: str  # "total" or a first-level group name
    at: float
    inclusive: bool = True

    @property
    def label(self) -> str:
        target = "总得分" if self.of == "total" else self.of
        return f"{target} {'≥' if self.inclusive else '>'} {_fmt(self.at)}"


@dataclass(frozen=True)
class Rubric:
    name: str
    level: str
    total: float
    scale_to: float
    step: float
    source: str
    file: str
    title: str
    leaves: tuple[Leaf, ...]
    groups: tuple[Group, ...]  # every inner node, depth-first in file order
    stages: tuple[Stage, ...]
    not_opened_label: str
    rate_method: RateMethod
    thresholds: tuple[Threshold, ...] = ()
    digest: str = ""
    _by_key: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def top_groups(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.depth == 1)

    @property
    def factor(self) -> float:
        """Multiplier from raw points to the published scale (county: 100 / 14)."""
        return self.scale_to / self.total

    def leaf_index(self, ref: str, *, source: str | None = None,
                   location: str | None = None) -> int:
        """Resolve a leaf by its name or by as many trailing path parts as make it unique."""
        parts = tuple(p.strip() for p in ref.strip().strip("/").split("/"))
        if parts and "/".join(parts) in self._by_key:
            return self._by_key["/".join(parts)]
        hits = [i for i, leaf in enumerate(self.leaves) if leaf.path[-len(parts):] == parts]
        if len(hits) == 1:
            return hits[0]
        where = location or f"leaf {ref!r}"
        if not hits:
            raise RubricError(
                f"no leaf of rubric {self.level!r} is called {ref!r}",
                source=source, location=where,
                expected="one of " + ", ".join(self.short_names()),
            )
        raise RubricError(
            f"{ref!r} names more than one leaf",
            source=source, location=where,
            expected="one of " + ", ".join(self.short_names()[i] for i in hits),
        )

    def short_names(self) -> list[str]:
        """For each leaf, the fewest trailing path parts that name it uniquely."""
        names = []
        for leaf in self.leaves:
            for n in range(1, len(leaf.path) + 1):
                tail = leaf.path[-n:]
                if sum(1 for other in self.leaves if other.path[-n:] == tail) == 1:
                    names.append("/".join(tail))
                    break
        return names

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def rubric_path(name: str) -> Path:
    """``city`` -> the bundled config/rubric/city.toml; anything else is a path."""
    candidate = Path(name)
    if candidate.suffix == ".toml" or candidate.exists():
        return candidate
    return config_dir() / "rubric" / f"{name}.toml"


def load_rubric(name_or_path: str | Path) -> Rubric:
    path = rubric_path(str(name_or_path))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "rubric file not found", source=path,
            expected="'city', 'county' or the path of a rubric TOML file",
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=path) from None
    rubric = parse_rubric(data, source=str(path))
    return _with_digest(rubric, hashlib.sha256(raw).hexdigest()[:12])


def _with_digest(rubric: Rubric, digest: str) -> Rubric:
    from dataclasses import replace

    return replace(rubric, digest=digest)


# ------------------------------------------------------------------------ parsing


class _Reader:
    """Typed access to one TOML table, with errors that name the file and key."""

    def __init__(self, data: Mapping[str, Any], source: str, where: str) -> None:
        self.data = data
        self.source = source
        self.where = where

    def _err(self, key: str, message: str, expected: str, got: object) -> RubricError:
        loc = f"{self.where}.{key}" if self.where else key
        return RubricError(message, source=self.source, location=loc, expected=expected, got=got)

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise self._err(key, "missing or not text", "a non-empty string", value)
        return value

    def number(self, key: str, default: float | None = None, *, positive: bool = False) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self._err(key, "missing or not a number", "a number", value)
        if positive and value <= 0:
            raise self._err(key, "must be positive", "a number > 0", value)
        return float(value)

    def path(self, key: str = "path") -> tuple[str, ...]:
        value = self.data.get(key)
        if (
            not isinstance(value, list) or not value
            or not all(isinstance(p, str) and p.strip() and "/" not in p and ":" not in p
                       for p in value)
        ):
            raise self._err(key, "not a valid path",
                            "a list of names without '/' or ':'", value)
        return tuple(p.strip() for p in value)

    def tables(self, key: str) -> list[_Reader]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._err(key, "not a list of tables", "[[" + key + "]] tables", value)
        prefix = f"{self.where}." if self.where else ""
        return [_Reader(v, self.source, f"{prefix}{key}[{i}]") for i, v in enumerate(value)]


def _is_multiple(value: float, step: float) -> bool:
    return abs(value / step - round(value / step)) < 1e-9


def _fmt(value: float) -> str:
    return f"{value:g}"


def _observations(leaf: _Reader, rule: RuleKind, step: float) -> list[Observation]:
    spec = (
        ("criteria", ObservationKind.CRITERION, 1),
        ("items", ObservationKind.ITEM, None),
        ("deductions", ObservationKind.DEDUCTION, None),
    )
    out: list[Observation] = []
    for key, kind, max_default in spec:
        for obs in leaf.tables(key):
            points = obs.number("points", positive=True)
            if not _is_multiple(points, step):
                raise obs._err("points", "points must respect the rubric's step",
                               f"a multiple of {_fmt(step)}", points)
            raw_max = obs.data.get("max", max_default)
            if raw_max is not None and (isinstance(raw_max, bool) or not isinstance(raw_max, int)
                                        or raw_max < 1):
                raise obs._err("max", "not a whole number", "an integer >= 1", raw_max)
            elements = obs.data.get("elements", [])
            out.append(Observation(
                name=obs.string("name"),
                kind=kind,
                points=-points if kind is ObservationKind.DEDUCTION else points,
                max_count=raw_max,
                text=obs.string("text", ""),
                probe_part=bool(obs.data.get("probe", False)),
                elements=tuple(str(e) for e in elements),
            ))
    names = [o.name for o in out]
    for name in names:
        if names.count(name) > 1:
            raise leaf._err("criteria", "two observations share a name", "unique names", name)
    return out


_NEEDS = {
    RuleKind.CRITERIA: ("criteria",),
    RuleKind.DEDUCTIONS: ("deductions",),
    RuleKind.PER_ITEM: ("items",),
}


def _parse_leaf(leaf: _Reader, default_step: float) -> Leaf:
    path = leaf.path()
    weight = leaf.number("weight", positive=True)
    rule_text = leaf.string("rule")
    try:
        rule = RuleKind(rule_text)
    except ValueError:
        raise leaf._err("rule", "unknown rule kind",
                        "one of " + ", ".join(k.value for k in RuleKind), rule_text) from None
    step = leaf.number("step", default_step, positive=True)
    if not _is_multiple(weight, step):
        raise leaf._err("weight", f"leaf {'/'.join(path)} does not respect its step",
                        f"a multiple of {_fmt(step)}", weight)
    cap = leaf.number("cap", weight, positive=True)
    if cap > weight + _EPS:
        raise leaf._err("cap", "a cap above the weight", f"at most {_fmt(weight)}", cap)
    observations = _observations(leaf, rule, step)
    for key in _NEEDS.get(rule, ()):
        if not leaf.data.get(key):
            raise leaf._err(key, f"rule {rule.value!r} needs {key}", f"a non-empty {key} list",
                            None)
    if rule is RuleKind.JUDGED and observations:
        raise leaf._err("rule", "a judged leaf takes points only", "no criteria/items/deductions",
                        len(observations))
    probe = None
    if rule is RuleKind.PROBE:
        p = leaf.data.get("probe")
        if not isinstance(p, dict):
            raise leaf._err("probe", "rule 'probe' needs a probe table",
                            "probe = { measure = ..., points = ... }", p)
        pr = _Reader(p, leaf.source, f"{leaf.where}.probe")
        probe = ProbeMeasure(pr.string("measure"), pr.number("points", positive=True),
                             pr.string("text", ""))
    base = weight if rule is RuleKind.DEDUCTIONS else 0.0
    result = Leaf(path=path, weight=weight, rule=rule, step=step, cap=cap, base=base,
                  observations=tuple(observations), probe=probe,
                  text=leaf.string("text", ""), source=leaf.string("source", ""),
                  note=leaf.string("note", ""))
    _check_attainable(leaf, result)
    return result


def _check_attainable(reader: _Reader, leaf: Leaf) -> None:
    """A leaf whose rule can never reach its weight is a typo in the rubric."""
    if leaf.rule in (RuleKind.JUDGED, RuleKind.DEDUCTIONS):
        return
    best = 0.0
    for obs in leaf.observations:
        if obs.points > 0:
            best += math.inf if obs.max_count is None else obs.points * obs.max_count
    if leaf.probe is not None:
        best = max(best, leaf.probe.points + sum(
            o.points * (o.max_count or 0) for o in leaf.observations
            if o.points > 0 and not o.probe_part))
    if min(best, leaf.cap) + _EPS < leaf.weight:
        raise reader._err("criteria", f"leaf {leaf.key} can never reach its weight",
                          f"attainable points >= {_fmt(leaf.weight)}", _fmt(min(best, leaf.cap)))


def _parse_stages(doc: _Reader, scale_to: float) -> tuple[Stage, ...]:
    stages = []
    for st in doc.tables("stages"):
        stages.append(Stage(st.string("name"), st.number("from")))
    if not stages:
        raise doc._err("stages", "no development stages", "[[stages]] tables", None)
    lowers = [s.lower for s in stages]
    if lowers[0] != 0 or any(b <= a for a, b in itertools.pairwise(lowers)):
        raise doc._err("stages", "stage bounds must start at 0 and increase",
                       "from = 0, then increasing values", lowers)
    if lowers[-1] > scale_to:
        raise doc._err("stages", "a stage starts above the scale", f"<= {_fmt(scale_to)}",
                       lowers[-1])
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise doc._err("stages", "two stages share a name", "unique names", names)
    return tuple(stages)


def parse_rubric(data: Mapping[str, Any], *, source: str = "<rubric>") -> Rubric:
    doc = _Reader(data, source, "")
    total = doc.number("total", positive=True)
    scale_to = doc.number("scale_to", total, positive=True)
    step = doc.number("step", 0.5, positive=True)
    leaves = [_parse_leaf(r, step) for r in doc.tables("leaves")]
    if not leaves:
        raise doc._err("leaves", "a rubric without leaves", "[[leaves]] tables", None)
    _check_unique(doc, leaves)
    groups = _build_groups(doc, leaves, total)
    report = data.get("report", {})
    rep = _Reader(report if isinstance(report, dict) else {}, source, "report")
    method_text = rep.string("group_score_rate", RateMethod.WEIGHTED.value)
    try:
        method = RateMethod(method_text)
    except ValueError:
        raise rep._err("group_score_rate", "unknown score-rate method",
                       "'weighted' or 'unweighted'", method_text) from None
    thresholds = _parse_thresholds(rep, groups)
    return Rubric(
        name=doc.string("name"), level=doc.string("level"), total=total, scale_to=scale_to,
        step=step, source=doc.string("source", ""), file=source,
        title=rep.string("title", doc.string("name")),
        leaves=tuple(leaves), groups=groups, stages=_parse_stages(doc, scale_to),
        not_opened_label=rep.string("not_opened", "未开通"), rate_method=method,
        thresholds=thresholds,
        _by_key={leaf.key: i for i, leaf in enumerate(leaves)},
    )


def _parse_thresholds(rep: _Reader, groups: Sequence[Group]) -> tuple[Threshold, ...]:
    out = []
    names = {g.name for g in groups if g.depth == 1}
    for t in rep.tables("thresholds"):
        of = t.string("of")
        if of != "total" and of not in names:
            raise t._err("of", "unknown group", "'total' or one of " + ", ".join(sorted(names)), of)
        op = t.string("op", ">=")
        if op not in (">=", ">"):
            raise t._err("op", "unknown comparison", "'>=' or '>'", op)
        out.append(Threshold(of=of, at=t.number("at"), inclusive=op == ">="))
    return tuple(out)


def _check_unique(doc: _Reader, leaves: Sequence[Leaf]) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for i, leaf in enumerate(leaves):
        if leaf.path in seen:
            raise doc._err(f"leaves[{i}].path", "two leaves have the same path",
                           "unique paths", leaf.key)
        seen[leaf.path] = i
    for i, leaf in enumerate(leaves):
        for other in leaves:
            if len(other.path) > len(leaf.path) and other.path[: len(leaf.path)] == leaf.path:
                raise doc._err(f"leaves[{i}].path", "a leaf is also a group of another leaf",
                               "leaves only at the ends of paths", leaf.key)


def _build_groups(doc: _Reader, leaves: Sequence[Leaf], total: float) -> tuple[Group, ...]:
    declared: dict[tuple[str, ...], _Reader] = {}
    for g in doc.tables("groups"):
        path = g.path()
        if path in declared:
            raise g._err("path", "a group is declared twice", "unique group paths", "/".join(path))
        declared[path] = g
    order: list[tuple[str, ...]] = []
    members: dict[tuple[str, ...], list[int]] = {}
    for i, leaf in enumerate(leaves):
        for n in range(1, len(leaf.path)):
            prefix = leaf.path[:n]
            if prefix not in members:
                members[prefix] = []
                order.append(prefix)
            members[prefix].append(i)
    for path, decl in declared.items():
        if path not in members:
            raise decl._err("path", "a group with no leaves", "the path of a group of leaves",
                              "/".join(path))
    groups = []
    for path in order:
        leaf_sum = sum(leaves[i].weight for i in members[path])
        reader = declared.get(path)
        if reader is None:
            if len(path) == 1:
                raise doc._err("groups", f"first-level group {path[0]} is not declared",
                               "a [[groups]] table with its weight", path[0])
            groups.append(Group(path, leaf_sum, tuple(members[path])))
            continue
        weight = reader.number("weight", positive=True)
        if abs(weight - leaf_sum) > _EPS:
            raise RubricError(
                f"group {'/'.join(path)} does not add up: its weight is {_fmt(weight)} "
                f"but its leaves add up to {_fmt(leaf_sum)}",
                source=doc.source, location=f"{reader.where}.weight",
                expected=f"weight = {_fmt(leaf_sum)}", got=_fmt(weight),
            )
        stated = reader.data.get("stated_weight")
        note = reader.string("note", "")
        if stated is not None and stated != weight and not note.strip():
            raise reader._err("note", "a group whose weight differs from the source's needs a note",
                              "note = \"why\"", None)
        groups.append(Group(path, weight, tuple(members[path]),
                            float(stated) if stated is not None else None, note,
                            reader.string("source", "")))
    top_sum = sum(g.weight for g in groups if g.depth == 1)
    if abs(top_sum - total) > _EPS:
        raise RubricError(
            f"the first-level groups add up to {_fmt(top_sum)}, the rubric's total is "
            f"{_fmt(total)}", source=doc.source, location="total",
            expected=f"total = {_fmt(top_sum)}", got=_fmt(total),
        )
    return tuple(groups)
