"""The sending benchmarks' campaign: n probes to 233 agencies, composed by the real composer.

Shared by bench_send.py and bench_workers.py (both put bench/ and the project root on
``sys.path``), so that both measure the same letters (~2 KB of Chinese each).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from mailprobe.clock import SystemClock
from mailprobe.compose import TemplateSet, compose
from mailprobe.directory import Account, Channel, ChannelKind, Persona, ProbeSpec
from mailprobe.models import ProbeRecord
from mailprobe.probe_details import DetailRequest, campaign_details
from mailprobe.sheets import Agency, Level

SECRET = b"bench-secret-for-sending-probes!"
TEMPLATES = ("eia_restaurant_1", "noise_night_1", "odour_factory_1", "river_pipe_1",
             "dust_site_1", "env_data_air_1")
AGENCIES = 233


def plan_probes(n: int, round_id: str, prefix: str, accounts: Sequence[Account],
                personas: Sequence[Persona]) -> tuple[list[ProbeRecord], tuple[object, ...]]:
    """n probes due now, sent by the personas in turn; returns them and the directory."""
    agencies = [Agency(f"广东第{i:03d}县区", Level.COUNTY, f"第{i % 21:02d}市", None, i)
                for i in range(AGENCIES)]
    channels = [Channel(a.name, ChannelKind.COMPLAINT, address=f"tousu{i}@hbj{i % 21}.gd.test")
                for i, a in enumerate(agencies)]
    by_id = {a.id: a for a in accounts}
    templates = TemplateSet.load()
    now = SystemClock().now() - timedelta(minutes=1)
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    details = campaign_details(
        [DetailRequest(pid, agencies[i % AGENCIES].name, agencies[i % AGENCIES].city,
                       date(2015, 11, 2)) for i, pid in enumerate(ids)], seed=1)
    records = []
    for i, pid in enumerate(ids):
        ch = channels[i % AGENCIES]
        template = TEMPLATES[i % len(TEMPLATES)]
        if template.startswith(("eia", "env")):
            ch = replace(ch, kind=ChannelKind.MAILBOX)
        persona = personas[i % len(personas)]
        spec = ProbeSpec(pid, round_id, ch.agency, ch, persona.id, template, now, details[pid])
        mail = compose(spec, persona, by_id[persona.account], f"{ch.agency}环境保护局",
                       templates, SECRET, datetime(2015, 11, 2, 9, tzinfo=UTC))
        records.append(ProbeRecord.from_spec(spec, token=mail.token, subject=mail.subject,
                                             body=mail.text, message_id=mail.message_id,
                                             raw=mail.raw))
    mailbox = [replace(c, kind=ChannelKind.MAILBOX) for c in channels]
    return records, (agencies, channels + mailbox, list(accounts), list(personas))
