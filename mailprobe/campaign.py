"""Campaign service: plan a round from the store's directory, render it, save it, steer it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select

from mailprobe.clock import Clock
from mailprobe.compose import TemplateSet, compose, probe_variables, render
from mailprobe.directory import Account, Persona, ProbeSpec
from mailprobe.directory_io import Directory
from mailprobe.errors import ConfigError, InputError
from mailprobe.models import (
    AgencyRow,
    PlanSaved,
    ProbeRecord,
    ProbeRow,
    ProbeView,
    RoundRecord,
    RoundRow,
    RoundStatus,
)
from mailprobe.plan import Plan, TemplateInfo, plan_round
from mailprobe.probe_details import DetailRequest, campaign_details, details_for, place_key
from mailprobe.schedule import Schedule, load_schedule
from mailprobe.store import Store
from mailprobe.tokens import make_token
from mailprobe.workdays import WorkCalendar

__all__ = [
    "RenderedPlan",
    "SendWindow",
    "agency_display",
    "form_probe",
    "load_windows",
    "plan_and_save",
    "render_plan",
    "save_rendered",
    "set_flags",
    "status",
    "window_key",
    "write_eml",
]

_MAX_REDRAWS = 1000


@dataclass(frozen=True)
class RenderedPlan:
    """A planned round with every probe rendered, ready to review or save."""

    plan: Plan
    round: RoundRecord
    probes: tuple[ProbeRecord, ...]
    window: SendWindow
    already_due: int  # probes whose send time has already passed by the clock

    @property
    def email(self) -> int:
        return sum(p.raw is not None for p in self.probes)


def agency_display(agency: str) -> str:
    """How a letter addresses the agency: its environmental bureau (环境保护局)."""
    return agency if agency.endswith(("局", "厅", "委员会")) else f"{agency}环境保护局"


def render_plan(store: Store, schedule_path: str | Path, *, templates: TemplateSet,
                calendar: WorkCalendar, secret: bytes, clock: Clock) -> RenderedPlan:
    """Plan ``schedule_path`` against the imported directory and render every probe.

    Earlier rounds named in ``previous_rounds`` are read from the store: a persona never
    writes twice to an agency, and no (street, 小区) pair is used twice. Every template is
    checked against its probe's variables here, so a missing variable fails planning, not
    sending. E-mail probes get their exact message (Date: the planned send time in the
    round's zone, Asia/Shanghai by default); web-form probes their text for the operator.
    """
    path = Path(schedule_path)
    schedule = load_schedule(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    directory = store.directory()
    assigned, taken = _previous(store, schedule)
    infos = {t.id: TemplateInfo(t.channels, t.title) for t in templates.templates}
    plan = plan_round(schedule, directory.agencies, directory.channels, directory.personas,
                      infos, calendar, already_assigned=assigned)
    details = _details(plan, directory, taken)
    people = _People(directory)
    probes = tuple(_render(replace(spec, details=details[spec.probe_id]), people, schedule,
                           templates, secret) for spec in plan.probes)
    zone = schedule.zone
    start = datetime.combine(schedule.start, time(0), tzinfo=zone)
    end = datetime.combine(schedule.end + timedelta(days=1), time(0), tzinfo=zone)
    record = RoundRecord(schedule.id, schedule.name, str(path), sha, start, end, schedule.seed)
    window = _send_window(schedule, calendar)
    now = clock.now()
    return RenderedPlan(plan, record, probes, window, sum(p.send_at <= now for p in probes))


def save_rendered(store: Store, rendered: RenderedPlan) -> PlanSaved:
    """Store the plan (idempotent: the same plan again changes nothing) and its office hours.

    The office hours go first: keyed by the schedule's hash, they are harmless alone, while
    probes saved without them could be sent outside office hours.
    """
    r = rendered.round
    store.setting_or_create(window_key(r.id, r.schedule_sha256), rendered.window.to_json)
    return store.save_plan(rendered.round, rendered.probes)


def plan_and_save(store: Store, schedule_path: str | Path, *, templates: TemplateSet,
                  calendar: WorkCalendar, secret: bytes, clock: Clock) -> tuple[Plan, PlanSaved]:
    """``render_plan`` then ``save_rendered``."""
    rendered = render_plan(store, schedule_path, templates=templates, calendar=calendar,
                           secret=secret, clock=clock)
    return rendered.plan, save_rendered(store, rendered)


def write_eml(rendered: RenderedPlan, folder: str | Path) -> list[Path]:
    """Every e-mail probe as ``<probe id>.eml`` and every web-form probe as ``.txt``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p in rendered.probes:
        if p.raw is not None:
            path = out / f"{p.probe_id}.eml"
            path.write_bytes(p.raw)
        else:
            path = out / f"{p.probe_id}.txt"
            path.write_text(f"网址: {p.channel.form_url}\n标题: {p.subject}\n\n{p.body}",
                            encoding="utf-8")
        written.append(path)
    return written


# --- when a round may send ---------------------------------------------------------------------


@dataclass(frozen=True)
class SendWindow:
    """When a round's probes may go out: office time (UTC second spans) before ``closes``.

    Saved with the plan (``campaign.save_rendered``): the round's office hours on working
    days from its first day until its reply window ends, so a probe held over a night or
    retried still goes out in office hours, and never after the round's replies are due.
    A round saved without spans may send at any time before ``closes``.
    """

    closes: datetime
    spans: tuple[tuple[int, int], ...] = ()

    def next_send(self, at: datetime) -> datetime | None:
        """``at`` if a probe may go out then, else the next instant it may; None: never."""
        if at >= self.closes:
            return None
        if not self.spans:
            return at
        t = at.timestamp()
        for start, end in self.spans:  # a round has a few dozen spans: a scan is enough
            if t < end:
                return at if t >= start else datetime.fromtimestamp(start, UTC)
        return None

    def to_json(self) -> str:
        return json.dumps({"closes": self.closes.isoformat(), "spans": self.spans})

    @classmethod
    def from_json(cls, text: str) -> SendWindow:
        data = json.loads(text)
        return cls(datetime.fromisoformat(data["closes"]),
                   tuple((int(a), int(b)) for a, b in data["spans"]))


def window_key(round_id: str, schedule_sha256: str) -> str:
    """The settings key of a round's send window; a changed schedule gets a new key."""
    return f"send-window/{round_id}/{schedule_sha256}"


def load_windows(store: Store, round_ids: Iterable[str]) -> dict[str, SendWindow]:
    wanted = sorted(set(round_ids))
    with store.session(write=False) as s:
        rows = s.execute(select(RoundRow.id, RoundRow.schedule_sha256, RoundRow.window_end)
                         .where(RoundRow.id.in_(wanted))).all()
    windows = {}
    for round_id, sha, end in rows:
        text = store.get_setting(window_key(round_id, sha))
        windows[round_id] = SendWindow.from_json(text) if text else SendWindow(end)
    return windows


# --- steering a saved round --------------------------------------------------------------------


def set_flags(store: Store, round_id: str, *, armed: bool | None = None,
              paused: bool | None = None) -> RoundStatus:
    """Arm/disarm (real servers) or pause/resume (the kill switch); effective at once."""
    return store.set_round_flags(round_id, armed=armed, paused=paused)


def status(store: Store, round_id: str) -> RoundStatus:
    return store.round_status(round_id)


def form_probe(store: Store, probe_id: str) -> ProbeView:
    """A web-form probe as the operator needs it (URL, subject, text)."""
    view = store.probe(probe_id)
    if view.channel.form_url is None:
        raise InputError(f"probe {probe_id} goes to an e-mail address, not a web form",
                         location=f"probe {probe_id}", expected="a web-form probe",
                         got=view.channel.address)
    return view


# --- internals ---------------------------------------------------------------------------------


def _previous(store: Store, schedule: Schedule
              ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(persona, agency) pairs and (street, 小区) pairs already used by earlier rounds."""
    wanted = list(schedule.previous_rounds)
    with store.session(write=False) as s:
        known = set(s.scalars(select(RoundRow.id).where(RoundRow.id.in_(wanted))))
        rows = s.execute(select(ProbeRow.persona_id, AgencyRow.name, ProbeRow.details)
                         .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)
                         .where(ProbeRow.round_id.in_(wanted))).all()
    for round_id in wanted:
        if round_id not in known:
            raise schedule.error(f"previous round {round_id} is not in the database",
                                 "round.previous_rounds", "rounds planned and saved earlier",
                                 round_id, "save it first: mailprobe plan --schedule "
                                 "<its file> --save")
    assigned = {(persona, agency) for persona, agency, _ in rows}
    taken = {place_key(d) for _, _, d in rows if "street" in d and "community" in d}
    return assigned, taken


def _send_window(schedule: Schedule, calendar: WorkCalendar) -> SendWindow:
    """Office time from the window's first day until its reply window ends.

    A probe held over a night, or retried, may go out after the window's last day but
    never after the replies to the round are due (``reply_window_working_days`` after it).
    """
    last = calendar.deadline(schedule.end, schedule.reply_window_working_days).last_day
    office = replace(schedule, end=last).office_time(calendar)
    closes = datetime.combine(last + timedelta(days=1), time(0), tzinfo=schedule.zone)
    return SendWindow(closes, tuple(zip(office.starts, office.ends, strict=True)))


def _details(plan: Plan, directory: Directory, taken: set[tuple[str, str]]
             ) -> dict[str, dict[str, str]]:
    """Unique details for the round (one campaign_details call), then clear of earlier rounds."""
    city = {a.name: a.city for a in directory.agencies}
    zone = plan.schedule.zone
    requests = [DetailRequest(p.probe_id, p.agency, city[p.agency],
                              p.send_at.astimezone(zone).date()) for p in plan.probes]
    details = campaign_details(requests, plan.schedule.seed)
    if not taken:
        return details
    used = taken | {place_key(d) for d in details.values()}
    for req in requests:
        if place_key(details[req.probe_id]) not in taken:
            continue
        for attempt in range(1, _MAX_REDRAWS):
            # Attempts past campaign_details' own redraws: stable for the same inputs.
            fresh = details_for(req.probe_id, req.agency, req.city, req.send_date,
                                plan.schedule.seed, attempt=_MAX_REDRAWS + attempt)
            if place_key(fresh) not in used:
                used.add(place_key(fresh))
                details[req.probe_id] = fresh
                break
    return details


def _render(spec: ProbeSpec, people: _People, schedule: Schedule, templates: TemplateSet,
            secret: bytes) -> ProbeRecord:
    persona, account = people.of(spec)
    display = agency_display(spec.agency)
    try:
        templates.check(spec.template, probe_variables(spec, persona, display),
                        channel=spec.channel.kind)
    except ConfigError as exc:
        raise ConfigError(f"probe {spec.probe_id} ({spec.agency}): {exc.message}",
                          source=exc.source, location=exc.location, expected=exc.expected,
                          got=exc.got, hint=exc.hint) from None
    if spec.channel.is_email:
        date = spec.send_at.astimezone(schedule.zone)
        mail = compose(spec, persona, account, display, templates, secret, date)
        return ProbeRecord.from_spec(spec, token=mail.token, subject=mail.subject,
                                     body=mail.text, message_id=mail.message_id, raw=mail.raw)
    subject, text = render(spec, persona, display, templates, secret)
    return ProbeRecord.from_spec(spec, token=make_token(spec.probe_id, secret),
                                 subject=subject, body=text)


class _People:
    """Personas and their accounts by id, from the imported directory."""

    def __init__(self, directory: Directory) -> None:
        self.personas = {p.id: p for p in directory.personas}
        self.accounts = {a.id: a for a in directory.accounts}

    def of(self, spec: ProbeSpec) -> tuple[Persona, Account]:
        persona = self.personas[spec.persona]  # the planner only picks imported personas
        account = self.accounts.get(persona.account)
        if account is None:
            raise InputError(f"persona {persona.id} uses unknown account {persona.account}",
                             hint="import the directory again: mailprobe directory import")
        return persona, account
