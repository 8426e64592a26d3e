"""Classifying and matching stored messages: the corpus through the real store on SQLite."""

from __future__ import annotations

import itertools
import random
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, update

from mailprobe import mailstore, round_facts
from mailprobe import process as stage
from mailprobe import review as decisions
from mailprobe.classify import MessageKind
from mailprobe.clock import ManualClock
from mailprobe.directory import Account, Channel, ChannelKind, Endpoint, Persona, TlsMode
from mailprobe.imap import Fetched
from mailprobe.models import Base
from mailprobe.models_mail import MessageRow
from mailprobe.models_review import Decider, JudgementRow, MatchRow, ReplyRoute
from mailprobe.response_report import ManualReply, MatchedMessage, SentRecord, probe_timings
from mailprobe.settings import token_secret
from mailprobe.sheets import Agency, Level
from mailprobe.store import Accepted, ProbeRecord, RoundRecord, Store
from mailprobe.tokens import make_token
from mailprobe.watch import parse_outcome
from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "messages"
SH = ZoneInfo("Asia/Shanghai")
ROUND = "2015-r1"
LOOP = Endpoint("127.0.0.1", 2525, TlsMode.NONE)
ACCOUNTS = {"zhangwei@mail.test": "zhangwei", "wangfang@mail.test": "wangfang",
            "li.na@mail.test": "lina"}


def sh(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    """An instant in November 2015, written in Beijing time."""
    return datetime(2015, 11, day, hour, minute, second, tzinfo=SH).astimezone(UTC)


@dataclass(frozen=True)
class P:
    key: str
    agency: str
    address: str | None  # None: a web form
    persona: str
    sent: datetime
    message_id: str | None
    body: str = "您好！请问有关环境问题应如何处理？谢谢。"
    details: tuple[tuple[str, str], ...] = ()

    @property
    def probe_id(self) -> str:
        return f"r1-{self.key}"


# The probes whose answers tests/messages/ holds (Message-IDs from sent-ids.txt).
PROBES = (
    P("sg", "韶关市", "hbj@sg.gd.test", "zhangwei", sh(2, 9, 30, 12),
      "<20151102093012.5e1c0a@mail.test>"),
    P("fs", "佛山市", "xinxiang@fs.gd.test", "wangfang", sh(2, 10, 5, 11),
      "<20151102100511.2b7f44@mail.test>"),
    P("mm", "茂名市", "hbj@mm.gd.test", "wangfang", sh(3, 8, 47, 2),
      "<20151103084702.9ad311@mail.test>", "您好！茂南区镕盛电镀厂夜间偷排废水，请贵局尽快查处。",
      (("factory", "镕盛电镀厂"),)),
    P("zj", "湛江市", "hbj@zj.gd.test", "zhangwei", sh(2, 9, 30, 12),
      "<20151102093012.77c0e2@mail.test>"),
    P("gz", "广州市", "sthjj@gz.gd.test", "lina", sh(3, 10, 21, 40),
      "<20151103102140.e4a9b0@mail.test>"),
    P("jm", "江门市", "xinfang@jm.gd.test", "lina", sh(4, 9, 15),
      "<20151104091500.0c3d5f@mail.test>"),
    P("hz", "惠州市", None, "lina", sh(2, 14, 2, 33), None),
    P("st", "汕头市", "hbj@st.gd.test", "zhangwei", sh(2, 16, 10, 5),
      "<20151102161005.f2e8c1@mail.test>"),
    P("yf", "云浮市", "hbj@yf.gd.test", "zhangwei", sh(2, 10, 5),
      "<20151102100500.7c31d2@mail.test>"),
    P("yj", "阳江市", "hbj@yj.gd.test", "zhangwei", sh(2, 10, 30),
      "<20151102103000.91be40@mail.test>"),
    P("sw", "汕尾市", "hbj@sw.gd.test", "zhangwei", sh(2, 11, 0),
      "<20151102110000.3d07a8@mail.test>"),
    P("jy", "揭阳市", "hbj@jy.gd.test", "lina", sh(3, 14, 20, 5),
      "<20151103142005.6b2f19@mail.test>"),
    P("cz", "潮州市", "hbj@cz.gd.test", "zhangwei", sh(4, 8, 30, 15),
      "<20151104083015.a9e7c3@mail.test>"),
    P("zq", "肇庆市", "hbj@zq.gd.test", "wangfang", sh(3, 10, 21),
      "<20151103102100.c85d26@mail.test>"),
    P("hy", "河源市", "hbj@hy.gd.test", "zhangwei", sh(5, 9, 0),
      "<20151105090000.1e6f9b@mail.test>"),
    P("qy", "清远市", "hbj@qy.gd.test", "wangfang", sh(5, 9, 30),
      "<20151105093000.40d8e1@mail.test>"),
)
BY_KEY = {p.key: p for p in PROBES}
# file -> (kind, bounce type, the probe it answers or None)
EXPECTED = {
    "01_foxmail_gbk_reply.eml": ("reply", None, "sg"),
    "02_qqmail_gbk_reply.eml": ("reply", None, "fs"),
    "03_gb2312_label_gb18030.eml": ("reply", None, "mm"),
    "04_coremail_reply.eml": ("reply", None, "zj"),
    "05_outlook_html_reply.eml": ("reply", None, "gz"),
    "06_ack_auto_submitted.eml": ("acknowledgement", None, "jm"),
    "07_ack_form_receipt.eml": ("acknowledgement", None, "hz"),
    "08_out_of_office_exchange.eml": ("auto_reply", None, "st"),
    "09_bounce_postfix_hard.eml": ("bounce", "hard", "yf"),
    "10_bounce_exim_soft.eml": ("bounce", "soft", "yj"),
    "11_bounce_chinese_provider.eml": ("bounce", "hard", "sw"),
    "12_reply_other_address.eml": ("reply", None, "jy"),
    "13_referral_only.eml": ("reply", None, "cz"),
    "14_newsletter.eml": ("unrelated", None, None),
    "15_spam_invoice.eml": ("unrelated", None, None),
    "16_malformed.eml": ("reply", None, "yf"),
    "17_big5_reply.eml": ("reply", None, "zq"),
    "18_utf8_label_gbk.eml": ("reply", None, "hy"),
    "19_unlabelled_big5.eml": ("reply", None, "qy"),
    "20_bounce_not_ours.eml": ("unrelated", None, None),
}
JM_REPLY = """From: =?UTF-8?B?5rGf6Zeo5biC546v5aKD5L+d5oqk5bGA?= <xinfang@jm.gd.test>
To: li.na@mail.test
Subject: =?UTF-8?B?5Zue5aSN77ya5YWz5LqO5bqf5pen55S15rGg5Zue5pS254K5?=
Date: Thu, 12 Nov 2015 10:00:00 +0800
Message-ID: <answer.20151112@jm.gd.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

李娜：
    您好！经查，我市已在各街道设置废旧电池回收点共三十六个，根据《江门市生活垃圾分类管理办法》
第十二条，回收点由各区环卫部门统一管理，具体位置已在我局网站公布。特此答复。

江门市环境保护局
"""
STRANGER = """From: xiaoli <xiaoli888@qq.com>
To: zhangwei@mail.test
Subject: =?UTF-8?B?5YWz5LqO5oKo55qE5p2l5L+h?=
Date: Mon, 9 Nov 2015 16:00:00 +0800
Message-ID: <stranger.20151109@qq.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

张伟：
    您好！经查，您反映的夜间施工问题，我局已责令施工单位停止夜间作业，并将持续跟踪检查。
"""


_UIDS = itertools.count(1)


def internaldate(raw: bytes) -> datetime:
    """The receive time a server would stamp: a minute after the Date header (if it is sane)."""
    for line in raw.split(b"\r\n\r\n")[0].replace(b"\r\n", b"\n").split(b"\n"):
        if line.lower().startswith(b"date:"):
            try:
                return parsedate_to_datetime(line[5:].decode().strip()).astimezone(UTC) + \
                    timedelta(minutes=1)
            except ValueError:
                break
    return sh(5, 10, 0)


def recipient(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n")[0].replace(b"\r\n", b"\n").decode("latin-1").lower()
    return next(a for a in ACCOUNTS if a in head.split("\nto:", 1)[1].split("\n")[0])


def _directory(store: Store) -> None:
    agencies = [Agency(p.agency, Level.CITY, p.agency, f"https://www.{p.key}.gd.test/", i + 2)
                for i, p in enumerate(PROBES)]
    channels = [Channel(p.agency, ChannelKind.CONSULTATION, address=p.address) if p.address else
                Channel(p.agency, ChannelKind.COMPLAINT, form_url=f"https://www.{p.key}.gd.test/x")
                for p in PROBES]
    accounts = [Account(a, address, address, LOOP, LOOP, f"MP_PW_{a.upper()}")
                for address, a in ACCOUNTS.items()]
    personas = [Persona(a, {"zhangwei": "张伟", "wangfang": "王芳", "lina": "李娜"}[a],
                        "广东省", a) for a in ACCOUNTS.values()]
    store.import_directory(agencies, channels, accounts, personas)


def _records(secret: bytes) -> list[ProbeRecord]:
    out = []
    for p in PROBES:
        channel = (Channel(p.agency, ChannelKind.CONSULTATION, address=p.address) if p.address
                   else Channel(p.agency, ChannelKind.COMPLAINT,
                                form_url=f"https://www.{p.key}.gd.test/x"))
        raw = (f"Message-ID: {p.message_id}\r\nSubject: probe\r\n\r\n{p.body}\r\n".encode()
               if p.message_id else None)
        out.append(ProbeRecord(p.probe_id, p.agency, channel, p.persona, "eia-approval", p.sent,
                               make_token(p.probe_id, secret), "咨询", p.body, p.message_id,
                               raw, dict(p.details)))
    return out


def build_round(url: str, clock: ManualClock) -> Store:
    """A migrated store with the directory, round 2015-r1 planned and every probe sent."""
    store = Store(url, clock=clock)
    store.upgrade()
    _directory(store)
    secret = token_secret(store, env={})
    store.save_plan(RoundRecord(ROUND, "2015年第一轮", "schedules/2015-round1.toml", "0" * 64,
                                sh(1, 9, 0), sh(14, 18, 0), 2015), _records(secret))
    now = max(p.sent for p in PROBES) + timedelta(minutes=1)
    claimed = store.claim_due(now, "w1", 100, timedelta(minutes=5))
    going = store.mark_sending_many([c.probe_id for c in claimed], "w1", at=now)
    store.mark_sent_many([Accepted(pid, BY_KEY[pid[3:]].sent, 250, "2.0.0 Ok")
                          for pid in going])
    store.record_submission(BY_KEY["hz"].probe_id, BY_KEY["hz"].sent, "operator")
    return store


def deliver(store: Store, raws: list[bytes], now: datetime) -> list[int]:
    """Store messages as the watcher does (raw bytes first, then the parse outcome)."""
    ids = []
    for raw in raws:
        account = ACCOUNTS[recipient(raw)]
        stored = mailstore.store_fetched(
            store, account, "INBOX", 1,
            [Fetched(next(_UIDS), internaldate(raw), len(raw), raw)], now=now)
        for mid, _ in stored.new:
            mailstore.mark_parsed(store, [parse_outcome(mid, raw)], now=now)
            ids.append(mid)
    return ids


def corpus() -> dict[str, bytes]:
    return {name: (CORPUS / name).read_bytes() for name in EXPECTED}


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


NOW = sh(20, 9, 0)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """The round sent and the corpus processed, once; each test works on a copy of the file."""
    path = tmp_path_factory.mktemp("template") / "mailprobe.db"
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{path}", clock) as store:
        clock.set(NOW)
        files = corpus()
        ids = deliver(store, list(files.values()), clock.now())
        report = stage.process_new(store, token_secret(store, env={}), clock=clock)
        assert report.processed == len(files) and report.queued == 0, report.line()
    return path, dict(zip(files, ids, strict=True))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock,
          template: tuple[Path, dict[str, int]]) -> Iterator[Store]:
    copy = tmp_path / "mailprobe.db"
    for suffix in ("", "-wal"):  # closing the store checkpoints the WAL; copy any left over
        if template[0].with_name(template[0].name + suffix).exists():
            shutil.copyfile(template[0].with_name(template[0].name + suffix),
                            copy.with_name(copy.name + suffix))
    with Store(f"sqlite:///{copy}", clock=clock) as s:
        yield s


@pytest.fixture
def secret(store: Store) -> bytes:
    return token_secret(store, env={})


@pytest.fixture
def processed(template: tuple[Path, dict[str, int]]) -> dict[str, int]:
    return template[1]


def rows(store: Store) -> dict[int, tuple[MessageRow, MatchRow]]:
    with store.session(write=False) as s:
        return {m.id: (m, r) for m, r in s.execute(
            select(MessageRow, MatchRow).join(MatchRow, MatchRow.message_id == MessageRow.id))}


def matched(store: Store) -> list[MatchedMessage]:
    with store.session(write=False) as s:
        found = s.execute(select(MatchRow, MessageRow.internaldate, MessageRow.kind)
                          .join(MessageRow, MessageRow.id == MatchRow.message_id)).all()
    return [MatchedMessage(str(m.message_id), at, kind or "", m.machine_probe_id, m.human_kind,
                           m.decided_by is Decider.HUMAN,
                           m.probe_id if m.decided_by is Decider.HUMAN else None)
            for m, at, kind in found]


def sent_records() -> list[SentRecord]:
    return [SentRecord(p.probe_id, p.agency, p.sent) for p in PROBES]


# --- the schema ----------------------------------------------------------------------------------


def test_the_review_migration_matches_the_models(store: Store) -> None:
    assert store.current_revision() == store.head_revision()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# --- the corpus --------------------------------------------------------------------------------


def test_every_corpus_message_gets_its_kind_and_probe(store: Store,
                                                      processed: dict[str, int]) -> None:
    found = rows(store)
    for name, (kind, bounce, key) in EXPECTED.items():
        message, match = found[processed[name]]
        assert (message.kind, message.bounce_type) == (kind, bounce), name
        assert match.probe_id == (BY_KEY[key].probe_id if key else None), (name, match.evidence)
        assert match.decided_by is Decider.MACHINE and not match.needs_review, name
        assert message.classified_at is not None and message.rules_version == stage.RULES_VERSION
        assert message.evidence, name
    by_rule = {name: found[i][1].rule for name, i in processed.items()}
    assert by_rule["06_ack_auto_submitted.eml"] == "our_message_id"
    assert by_rule["07_ack_form_receipt.eml"] == "mailbox_and_domain"  # a web-form probe
    assert by_rule["09_bounce_postfix_hard.eml"] == "bounce_returned_message"
    assert by_rule["12_reply_other_address.eml"] == "mailbox_and_domain"
    assert by_rule["01_foxmail_gbk_reply.eml"] == "mailbox_and_address"


def test_a_bounce_of_a_message_we_never_sent_is_not_trusted(store: Store,
                                                            processed: dict[str, int]) -> None:
    message, match = rows(store)[processed["20_bounce_not_ours.eml"]]
    assert message.kind == "unrelated" and message.bounce_type is None
    assert any("not a message we sent" in e for e in message.evidence or ())
    assert match.probe_id is None and match.machine_probe_id is None and not match.needs_review


def test_an_acknowledgement_then_a_reply_the_reply_stops_the_clock(
        store: Store, secret: bytes, clock: ManualClock, processed: dict[str, int]) -> None:
    deliver(store, [crlf(JM_REPLY)], clock.now())
    assert stage.process_new(store, secret, clock=clock).attached == 1
    timing = {t.probe_id: t for t in probe_timings(sent_records(), matched(store))}
    jm = timing["r1-jm"]
    assert jm.first_ack_at == sh(4, 9, 16, 7)  # the receipt: reported, not counted
    assert jm.replied_at == sh(12, 10, 1)
    ack = rows(store)[processed["06_ack_auto_submitted.eml"]][0]
    assert any("min after the probe" in e for e in ack.evidence or ())  # timed once matched
    assert timing["r1-hz"].first_ack_at is not None and timing["r1-hz"].replied_at is None
    assert timing["r1-st"].replied_at is None  # an out-of-office message never counts
    assert timing["r1-yf"].replied_at == internaldate((CORPUS / "16_malformed.eml").read_bytes())


def test_a_reply_nobody_can_read_goes_to_review_with_its_probe_first(
        store: Store, secret: bytes, clock: ManualClock, processed: dict[str, int]) -> None:
    head, _, _ = JM_REPLY.partition("\n\n")
    head = head.replace("charset=UTF-8", "charset=GB2312")  # the agency's client lied
    raw = crlf(head + "\n\n") + random.Random(5).randbytes(1500)
    [garbled] = deliver(store, [raw], clock.now())
    report = stage.process_new(store, secret, clock=clock)
    assert (report.processed, report.attached, report.queued) == (1, 0, 1)
    message, match = rows(store)[garbled]
    assert message.kind == "reply" and match.probe_id is None and match.needs_review
    assert match.evidence.startswith("正文无法辨认（"), match.evidence
    assert match.guesses[0]["probe_id"] == "r1-jm"  # found by its sender all the same
    assert match.substance["garbled"] >= 5
    assert stage.propose_effective(stage._substance(match.substance))[0] is False
    timing = {t.probe_id: t for t in probe_timings(sent_records(), matched(store))}
    assert timing["r1-jm"].replied_at is None  # not counted until an evaluator says so


def test_processing_again_changes_nothing(store: Store, secret: bytes, clock: ManualClock,
                                          processed: dict[str, int]) -> None:
    before = {i: (m.kind, r.probe_id, r.decided_at) for i, (m, r) in rows(store).items()}
    clock.advance(timedelta(hours=1))
    assert stage.process_new(store, secret, clock=clock).processed == 0
    assert stage.reprocess(store, secret, clock=clock).processed == 0  # rules unchanged
    again = stage.reprocess(store, secret, list(processed.values()), clock=clock)
    assert again.processed == len(processed) and again.attached == 17
    after = {i: (m.kind, r.probe_id, r.decided_at) for i, (m, r) in rows(store).items()}
    assert after == before


def test_a_human_assignment_survives_reprocessing(store: Store, secret: bytes,
                                                  clock: ManualClock,
                                                  processed: dict[str, int]) -> None:
    [stranger] = deliver(store, [crlf(STRANGER)], clock.now())
    report = stage.process_new(store, secret, clock=clock)
    assert (report.processed, report.queued) == (1, 1)
    [item] = decisions.review_queue(store, ROUND)
    assert item.message_id == stranger and item.kind == "reply"
    assert {g.probe_id for g in item.guesses} >= {"r1-sg", "r1-zj", "r1-hy"}
    assert rows(store)[stranger][1].machine_probe_id is None
    decisions.assign(store, stranger, "r1-sg", by="王敏", reason="the staff member's own mailbox",
                 clock=clock)
    assert decisions.review_queue(store) == []
    with store.session() as s:  # the rules improved: every message is out of date
        s.execute(update(MessageRow).values(rules_version="rules-old"))
    again = stage.reprocess(store, secret, clock=clock)
    assert again.processed == len(processed) + 1 and again.kept_human == 1
    _, match = rows(store)[stranger]
    assert (match.probe_id, match.decided_by, match.reviewer) == ("r1-sg", Decider.HUMAN, "王敏")
    # The machine re-ran, learned the sender from the decision, and now agrees with it.
    assert (match.machine_probe_id, match.rule) == ("r1-sg", "mailbox_and_address")
    assert match.rules_version == stage.RULES_VERSION
    # The address learned from the decision now matches the next mail from it.
    follow = STRANGER.replace("stranger.20151109", "stranger2").replace("9 Nov", "10 Nov")
    deliver(store, [crlf(follow)], clock.now())
    assert stage.process_new(store, secret, clock=clock).attached == 1


def test_reject_and_reclassify_keep_both_views(store: Store, secret: bytes, clock: ManualClock,
                                               processed: dict[str, int]) -> None:
    ack = processed["07_ack_form_receipt.eml"]
    decisions.reclassify(store, secret, ack, MessageKind.REPLY, by="王敏",
                     reason="the receipt names the result", clock=clock)
    message, match = rows(store)[ack]
    assert (message.kind, match.human_kind, match.probe_id) == ("acknowledgement", "reply",
                                                                 "r1-hz")
    hz = {t.probe_id: t for t in probe_timings(sent_records(), matched(store))}["r1-hz"]
    assert (hz.first_ack_at, hz.replied_at) == (None, message.internaldate)
    reply = processed["01_foxmail_gbk_reply.eml"]
    decisions.reject(store, reply, by="王敏", reason="answers another citizen", clock=clock)
    _, match = rows(store)[reply]
    assert match.probe_id is None and match.machine_probe_id == "r1-sg"
    with pytest.raises(Exception, match="needs a reason"):
        decisions.reject(store, reply, by="王敏", reason=" ", clock=clock)
    with pytest.raises(Exception, match="before probe r1-hy was sent"):
        decisions.assign(store, reply, "r1-hy", by="王敏", clock=clock)


def test_manual_replies_count_and_stop_the_clock(store: Store, clock: ManualClock,
                                                 processed: dict[str, int]) -> None:
    number = decisions.record_manual_reply(store, "r1-st", sh(6, 10, 0), ReplyRoute.PHONE,
                                       by="王敏", note="科员回电答复", clock=clock)
    manual = [ManualReply(number, "r1-st", sh(6, 10, 0), "phone", "王敏")]
    timing = {t.probe_id: t for t in probe_timings(sent_records(), matched(store), manual)}
    assert timing["r1-st"].replied_at == sh(6, 10, 0)
    name, lines, pending = round_facts.response_lines(store, ROUND, round_end=clock.now())
    assert (name, pending, len(lines)) == ("2015年第一轮", 0, len(PROBES))
    st = next(line for line in lines if line.probe_id == "r1-st")
    assert st.timing is not None and st.timing.replied_at == sh(6, 10, 0)
    assert (st.manual_route, st.reply_text) == ("phone", "科员回电答复")
    sw = next(line for line in lines if line.probe_id == "r1-sw")
    assert (sw.bounce, sw.unusable, sw.matched_rule) == ("hard", True, "bounce_returned_message")
    with pytest.raises(Exception, match="before probe r1-qy was sent"):
        decisions.record_manual_reply(store, "r1-qy", sh(2, 9, 0), ReplyRoute.PORTAL, by="王敏",
                                  clock=clock)
    with pytest.raises(Exception, match="ahead of time"):
        decisions.record_manual_reply(store, "r1-qy", sh(30, 9, 0), ReplyRoute.PORTAL, by="王敏",
                                  clock=clock)


def test_judgements_keep_the_proposal_and_the_decision(store: Store, clock: ManualClock,
                                                       processed: dict[str, int]) -> None:
    with store.session(write=False) as s:
        proposals = {j.probe_id: j for j in s.scalars(select(JudgementRow))}
    assert proposals["r1-cz"].proposed_effective is False  # referral only
    assert "另找部门" in (proposals["r1-cz"].proposal_reason or "")
    assert proposals["r1-sg"].proposed_effective is True
    assert "r1-jm" not in proposals  # an acknowledgement is nothing to judge
    decisions.judge(store, "r1-cz", True, by="王敏", reason="the hotline is the right place",
                clock=clock)
    with store.session(write=False) as s:
        cz = s.get_one(JudgementRow, "r1-cz")
    assert (cz.proposed_effective, cz.effective, cz.judged_by) == (False, True, "王敏")


def test_probe_timings_prefer_the_human_view() -> None:
    sent = [SentRecord("a", "甲", sh(2, 9, 0)), SentRecord("b", "乙", sh(2, 9, 0))]
    messages = [
        MatchedMessage("1", sh(3, 9, 0), "acknowledgement", "a"),
        MatchedMessage("2", sh(4, 9, 0), "acknowledgement", "a", human_kind="reply",
                       human_decided=False),
        MatchedMessage("3", sh(3, 12, 0), "reply", "a", human_decided=True,
                       human_probe_id=None),  # rejected: it answered someone else
        MatchedMessage("4", sh(5, 9, 0), "reply", None, human_decided=True,
                       human_probe_id="b"),
    ]
    manual = [ManualReply(1, "b", sh(4, 15, 0), "phone", "王敏")]
    a, b = probe_timings(sent, messages, manual, round_end=sh(30, 0, 0))
    assert (a.first_ack_at, a.replied_at, a.round_end) == (sh(3, 9, 0), sh(4, 9, 0),
                                                          sh(30, 0, 0))
    assert (b.first_ack_at, b.replied_at) == (None, sh(4, 15, 0))


def test_a_message_that_cannot_be_parsed_waits_for_review(store: Store, secret: bytes,
                                                          clock: ManualClock) -> None:
    garbage = bytes(range(256)) * 3
    stored = mailstore.store_fetched(store, "zhangwei", "INBOX", 1,
                                     [Fetched(next(_UIDS), NOW, len(garbage), garbage)], now=NOW)
    [(number, _)] = stored.new
    mailstore.mark_parsed(store, [parse_outcome(number, garbage)], now=NOW)
    assert stage.process_new(store, secret, clock=clock).queued == 1
    [item] = decisions.review_queue(store)
    assert item.message_id == number and item.evidence.startswith("could not be parsed")


def test_two_workers_process_each_message_once(tmp_path: Path, clock: ManualClock) -> None:
    with build_round(f"sqlite:///{tmp_path / 'fresh.db'}", ManualClock(sh(1, 8, 0))) as store:
        deliver(store, list(corpus().values()), NOW)
        secret = token_secret(store, env={})
        results: list[stage.ProcessReport] = []
        workers = [threading.Thread(target=lambda: results.append(
            stage.process_new(store, secret, clock=clock))) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sum(r.processed for r in results) == len(EXPECTED)
        assert len(rows(store)) == len(EXPECTED)
