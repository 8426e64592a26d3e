"""Parse once: the facts the sync's parsing processes hand over give processing exactly the
results it gets by parsing the raw bytes itself, and are ignored where they might not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailprobe import parsing
from mailprobe import process as stage
from mailprobe.classify import classify
from mailprobe.clock import ManualClock
from mailprobe.decode import parse_message
from mailprobe.models_mail import MessageRow
from mailprobe.models_review import MatchRow
from mailprobe.settings import token_secret
from mailprobe.store import Store
from tests.test_process import NOW, build_round, corpus, deliver, sh


def _results(store: Store) -> dict[int, tuple[Any, ...]]:
    with store.session(write=False) as s:
        rows = s.execute(select(MessageRow, MatchRow)
                         .join(MatchRow, MatchRow.message_id == MessageRow.id)).all()
        return {m.id: (m.kind, m.bounce_type, m.evidence, m.new_text, x.probe_id,
                       x.machine_probe_id, x.needs_review, x.rule, x.evidence, x.confidence,
                       x.guesses, x.substance, x.from_address, x.subject)
                for m, x in rows}


def _processed(tmp_path: Path, name: str, hand: bool,
               sent: frozenset[str] | None = None) -> tuple[dict[int, tuple[Any, ...]], int]:
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{tmp_path / name}", clock) as store:
        clock.set(NOW)
        files = corpus()
        ids = deliver(store, list(files.values()), clock.now())
        if hand:
            sent_ids = stage.sent_message_ids(store) if sent is None else sent
            version, results = parsing.parse_many(list(zip(ids, files.values(), strict=True)),
                                                  parsing.MAX_BYTES, parsing.MAX_PARTS,
                                                  sent_ids)
            stage.hand_over(store, [(o[0], f) for o, f in results if f is not None],
                            sent_ids, version)
            handed = len(stage._handoff(store).waiting)
        else:
            handed = 0
        report = stage.process_new(store, token_secret(store, env={}), clock=clock)
        assert report.processed == len(files)
        assert not stage._handoff(store).waiting  # taken or dropped
        return _results(store), handed


def test_handed_over_facts_give_the_results_of_parsing_again(tmp_path: Path) -> None:
    parsed_again, _ = _processed(tmp_path, "a.db", hand=False)
    handed_over, handed = _processed(tmp_path, "b.db", hand=True)
    assert handed == len(corpus())
    assert handed_over == parsed_again


def test_facts_classified_with_other_sent_ids_are_not_used(tmp_path: Path) -> None:
    # Classified as if no probe had been sent: the bounces are not trusted in those facts;
    # processing sees that the ids they return are sent ones now and parses them again.
    parsed_again, _ = _processed(tmp_path, "a.db", hand=False)
    handed_over, _ = _processed(tmp_path, "b.db", hand=True, sent=frozenset())
    assert handed_over == parsed_again


def test_facts_from_other_code_are_ignored(tmp_path: Path) -> None:
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{tmp_path / 'c.db'}", clock) as store:
        raw = next(iter(corpus().values()))
        f = parsing.facts(parse_message(raw), frozenset())
        stage.hand_over(store, [(1, f)], frozenset(), "another-version")
        assert not stage._handoff(store).waiting
        stage.hand_over(store, [(1, f)], frozenset(), parsing.code_version())
        assert set(stage._handoff(store).waiting) == {1}


def test_facts_round_trip_the_classification() -> None:
    for raw in corpus().values():
        parsed = parse_message(raw)
        f = parsing.facts(parsed, frozenset({"<20151102100500.7c31d2@mail.test>"}))
        assert parsing.classification(f) == classify(
            parsed, sent_message_ids=frozenset({"<20151102100500.7c31d2@mail.test>"}))
