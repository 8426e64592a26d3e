"""Classified while synced: the sync's parsing classifies and matches each new message and
records exactly what processing would have, and records nothing matched against probes that
are no longer all the sent ones."""

from __future__ import annotations

import asyncio
import gc
import pickle
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mailprobe import examine, parsing, sync_pipeline
from mailprobe import process as stage
from mailprobe.clock import ManualClock
from mailprobe.decode import MAX_BYTES, MAX_PARTS, parse_message
from mailprobe.imap import Fetched
from mailprobe.models import ProbeRow
from mailprobe.models_mail import MessageRow
from mailprobe.models_review import JudgementRow, MatchRow
from mailprobe.settings import token_secret
from mailprobe.store import Store
from mailprobe.sync_pipeline import Pipeline, shutdown_parsers
from mailprobe.watch import WatchPolicy
from tests.test_process import (
    ACCOUNTS,
    NOW,
    build_round,
    corpus,
    deliver,
    internaldate,
    recipient,
    sh,
)

POLICIES = {
    "in-process": WatchPolicy(parse_pool_min=10_000),  # parsed in a thread
    "workers": WatchPolicy(parse_pool_min=1, parse_workers=2),  # in parsing processes
}


@pytest.fixture(scope="module", autouse=True)
def _parsers() -> Iterator[None]:
    yield
    shutdown_parsers()


def results(store: Store) -> dict[str, tuple[Any, ...]]:
    """Every message's classification, match and judgement, by the digest of its bytes."""
    with store.session(write=False) as s:
        rows = s.execute(select(MessageRow, MatchRow)
                         .join(MatchRow, MatchRow.message_id == MessageRow.id)).all()
        judged = {j.probe_id: (j.proposed_effective, j.proposal_reason)
                  for j in s.scalars(select(JudgementRow))}
        return {m.sha256: (m.kind, m.bounce_type, m.evidence, m.new_text, m.rules_version,
                           x.probe_id, x.machine_probe_id, x.needs_review, x.rule, x.evidence,
                           x.confidence, x.guesses, x.substance, x.from_address, x.subject,
                           judged.get(x.probe_id or ""))
                for m, x in rows}


def processed_afterwards(tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    """The corpus stored and parsed, then classified and matched by ``process_new``."""
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{tmp_path / 'after.db'}", clock) as store:
        clock.set(NOW)
        deliver(store, list(corpus().values()), clock.now())
        assert stage.process_new(store, token_secret(store, env={}),
                                 clock=clock).processed == len(corpus())
        return results(store)


def by_account() -> dict[str, list[Fetched]]:
    fetched: dict[str, list[Fetched]] = defaultdict(list)
    for raw in corpus().values():
        account = ACCOUNTS[recipient(raw)]
        fetched[account].append(Fetched(len(fetched[account]) + 1, internaldate(raw),
                                        len(raw), raw))
    return fetched


async def sync(store: Store, clock: ManualClock, policy: WatchPolicy, *,
               meanwhile: Any = None) -> int:
    """Each account's messages through the sync pipeline (two batches each), with the
    secret; ``meanwhile(store)`` runs after the first batch is stored. Returns how many
    were classified in the sync."""
    classified = 0
    for account, fetched in by_account().items():
        pipe = Pipeline(store, account, "INBOX", 1, clock, policy,
                         token_secret(store, env={}))
        half = len(fetched) // 2
        await pipe.add(fetched[:half], fetched[half - 1].uid)
        if meanwhile is not None:
            await pipe.finish()  # stored and parsed: its context was read
            meanwhile(store)
            pipe.new.clear()
        await pipe.add(fetched[half:], fetched[-1].uid)
        await pipe.finish()
        classified += pipe.classified
    return classified


@pytest.mark.parametrize("mode", list(POLICIES))
def test_the_sync_records_what_processing_would(tmp_path: Path, mode: str) -> None:
    expected = processed_afterwards(tmp_path)
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{tmp_path / 'during.db'}", clock) as store:
        clock.set(NOW)
        classified = asyncio.run(sync(store, clock, POLICIES[mode]))
        assert classified == len(corpus())
        # Nothing left for processing: each message was classified once, in the sync.
        assert stage.process_new(store, token_secret(store, env={}),
                                 clock=clock).processed == 0
        assert results(store) == expected
    assert len(expected) == len(corpus())


def _send_one_more(store: Store) -> None:
    """A probe counted as sent only now (another worker sent it meanwhile)."""
    with store.session() as s:
        first = s.scalars(select(ProbeRow.probe_id).order_by(ProbeRow.probe_id)).first()
        latest = s.scalar(select(func.max(ProbeRow.accepted_at)))
        s.execute(update(ProbeRow).where(ProbeRow.probe_id == first)
                  .values(accepted_at=latest + timedelta(minutes=1)))


@pytest.mark.parametrize("mode", list(POLICIES))
def test_nothing_matched_against_outdated_probes_is_recorded(tmp_path: Path,
                                                             mode: str) -> None:
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{tmp_path / 'stale.db'}", clock) as store:
        clock.set(NOW)
        # The probes change after each account's first half was recorded: the second half
        # was matched against the old probes in the pool or is matched against new ones.
        classified = asyncio.run(sync(store, clock, POLICIES[mode], meanwhile=_send_one_more))
        with store.session(write=False) as s:
            unclassified = s.scalar(select(MessageRow.id).where(
                MessageRow.classified_at.is_(None)).limit(1))
        left = stage.process_new(store, token_secret(store, env={}), clock=clock).processed
        # Each account's second half was matched against the probes read before the
        # change: processing did those, against the probes as they are now.
        second_halves = sum(len(f) - len(f) // 2 for f in by_account().values())
        assert (classified, left) == (len(corpus()) - second_halves, second_halves)
        assert unclassified is not None
        assert len(results(store)) == len(corpus())


def test_save_examined_refuses_results_of_another_stamp(tmp_path: Path) -> None:
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{tmp_path / 'stamp.db'}", clock) as store:
        clock.set(NOW)
        raw = next(iter(corpus().values()))
        (mid,) = deliver(store, [raw], NOW)
        ctx = stage.load_context(store, token_secret(store, env={}))
        rows = examine.fresh_rows(examine.examine(ctx, mid, ACCOUNTS[recipient(raw)],
                                                  internaldate(raw), raw))
        _send_one_more(store)
        with store.session() as s:
            assert stage.save_examined(s, [], [rows], ctx.stamp, NOW) is None
        with store.session() as s:
            assert stage.save_examined(s, [], [rows], stage.load_context(
                store, token_secret(store, env={})).stamp, NOW) == 1
        with store.session() as s:  # recorded once: a second time changes nothing
            assert stage.save_examined(s, [], [rows], stage.load_context(
                store, token_secret(store, env={})).stamp, NOW) == 0


def test_a_parsing_process_keeps_the_context_by_key(tmp_path: Path) -> None:
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{tmp_path / 'key.db'}", clock) as store:
        ctx = stage.load_context(store, token_secret(store, env={}))
    raw = next(iter(corpus().values()))
    items = [(1, raw, internaldate(raw))]
    account = ACCOUNTS[recipient(raw)]
    sent = examine.parse_and_examine(items, account, MAX_BYTES, MAX_PARTS, "k1",
                                     pickle.dumps(ctx))
    kept = examine.parse_and_examine(items, account, MAX_BYTES, MAX_PARTS, "k1", None)
    other = examine.parse_and_examine(items, account, MAX_BYTES, MAX_PARTS, "k2", None)
    assert sent.examined and kept.examined and not other.examined
    assert sent.results == kept.results and sent.results[0][1] is not None
    assert other.results[0][1] is None and other.results[0][0] == sent.results[0][0]
    # Other limits than processing's would give other text: only parsed then.
    small = examine.parse_and_examine(items, account, 1_000, MAX_PARTS, "k1", None)
    assert small.results[0][1] is None


def test_a_message_the_rules_fail_on_is_left_for_processing() -> None:
    raw = next(iter(corpus().values()))
    parsed = parse_message(raw)
    broken = examine.MatchContext(None, frozenset())  # type: ignore[arg-type]  # no index
    outcome = parsing.outcome(1, raw)
    assert examine.examine_parsed(broken, outcome, parsed, "a", internaldate(raw), raw) is None


def test_collections_are_fewer_while_syncs_run_and_as_before_after() -> None:
    before = gc.get_threshold()
    first, second = sync_pipeline.fewer_collections(), sync_pipeline.fewer_collections()
    first.__enter__()
    assert gc.get_threshold() == examine.RELAXED_GC
    second.__enter__()  # two syncs overlap: the first ends before the second
    first.__exit__(None, None, None)
    assert gc.get_threshold() == examine.RELAXED_GC
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), sync_pipeline.fewer_collections():
        raise RuntimeError("a failed sync")
    assert gc.get_threshold() == before


def test_parsing_processes_collect_less_often() -> None:
    assert sync_pipeline.parsing_pool(1).submit(gc.get_threshold).result() == examine.RELAXED_GC


@pytest.mark.parametrize("value", [["plain", "中文"], {"reasons": ["a\ud800b"]}, ["\udcff"]])
def test_json_columns_read_back_as_the_values_even_with_lone_surrogates(value: Any) -> None:
    import json
    encoded = examine._json(value)
    assert isinstance(encoded, examine.JsonText)
    assert json.loads(encoded) == value
