"""mailprobe: simulated-citizen probes of government websites and the indicator engine."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailprobe.campaign_report import write_campaign_report
    from mailprobe.campaign_scores import campaign_scores
    from mailprobe.classify import Classification, MessageKind, classify
    from mailprobe.clock import Clock, ManualClock, SystemClock
    from mailprobe.compose import ComposedProbe, TemplateSet, compose
    from mailprobe.decode import ParsedMessage, parse_message
    from mailprobe.engine import Evaluation, evaluate
    from mailprobe.errors import (
        CalendarError,
        ConfigError,
        InputError,
        MailprobeError,
        RubricError,
        SheetError,
    )
    from mailprobe.match import MatchResult, match_message
    from mailprobe.plan import Plan, plan_round
    from mailprobe.rank import Ranking, Statistics, competition_rank, rank_sites, statistics
    from mailprobe.rubric import Rubric, load_rubric
    from mailprobe.schedule import Schedule, load_schedule
    from mailprobe.score import DerivedScore, MergePolicy, Override, Scores, score_sheets
    from mailprobe.settings import Settings, load_settings
    from mailprobe.sheets import Agency, read_agencies, read_score_sheet
    from mailprobe.store import Store
    from mailprobe.timeliness import ProbeTiming, load_queue_method, timeliness_points
    from mailprobe.workdays import WorkCalendar, default_calendar, load_calendar

__all__ = [
    "Agency",
    "CalendarError",
    "Classification",
    "Clock",
    "ComposedProbe",
    "ConfigError",
    "DerivedScore",
    "Evaluation",
    "InputError",
    "MailprobeError",
    "ManualClock",
    "MatchResult",
    "MergePolicy",
    "MessageKind",
    "Override",
    "ParsedMessage",
    "Plan",
    "ProbeTiming",
    "Ranking",
    "Rubric",
    "RubricError",
    "Schedule",
    "Scores",
    "Settings",
    "SheetError",
    "Statistics",
    "Store",
    "SystemClock",
    "TemplateSet",
    "WorkCalendar",
    "campaign_scores",
    "classify",
    "competition_rank",
    "compose",
    "default_calendar",
    "evaluate",
    "load_calendar",
    "load_queue_method",
    "load_rubric",
    "load_schedule",
    "load_settings",
    "match_message",
    "parse_message",
    "plan_round",
    "rank_sites",
    "read_agencies",
    "read_score_sheet",
    "score_sheets",
    "statistics",
    "timeliness_points",
    "write_campaign_report",
]

# Loaded on first use (PEP 562), so that importing one stage, say a pure one, does not
# pull in the database, the mail clients and the scheduler with it.
_WHERE = {
    "Agency": "mailprobe.sheets",
    "CalendarError": "mailprobe.errors",
    "Classification": "mailprobe.classify",
    "Clock": "mailprobe.clock",
    "ComposedProbe": "mailprobe.compose",
    "ConfigError": "mailprobe.errors",
    "DerivedScore": "mailprobe.score",
    "Evaluation": "mailprobe.engine",
    "InputError": "mailprobe.errors",
    "MailprobeError": "mailprobe.errors",
    "ManualClock": "mailprobe.clock",
    "MatchResult": "mailprobe.match",
    "MergePolicy": "mailprobe.score",
    "MessageKind": "mailprobe.classify",
    "Override": "mailprobe.score",
    "ParsedMessage": "mailprobe.decode",
    "Plan": "mailprobe.plan",
    "ProbeTiming": "mailprobe.timeliness",
    "Ranking": "mailprobe.rank",
    "Rubric": "mailprobe.rubric",
    "RubricError": "mailprobe.errors",
    "Schedule": "mailprobe.schedule",
    "Scores": "mailprobe.score",
    "Settings": "mailprobe.settings",
    "SheetError": "mailprobe.errors",
    "Statistics": "mailprobe.rank",
    "Store": "mailprobe.store",
    "SystemClock": "mailprobe.clock",
    "TemplateSet": "mailprobe.compose",
    "WorkCalendar": "mailprobe.workdays",
    "campaign_scores": "mailprobe.campaign_scores",
    "classify": "mailprobe.classify",
    "competition_rank": "mailprobe.rank",
    "compose": "mailprobe.compose",
    "default_calendar": "mailprobe.workdays",
    "evaluate": "mailprobe.engine",
    "load_calendar": "mailprobe.workdays",
    "load_queue_method": "mailprobe.timeliness",
    "load_rubric": "mailprobe.rubric",
    "load_schedule": "mailprobe.schedule",
    "load_settings": "mailprobe.settings",
    "match_message": "mailprobe.match",
    "parse_message": "mailprobe.decode",
    "plan_round": "mailprobe.plan",
    "rank_sites": "mailprobe.rank",
    "read_agencies": "mailprobe.sheets",
    "read_score_sheet": "mailprobe.sheets",
    "score_sheets": "mailprobe.score",
    "statistics": "mailprobe.rank",
    "timeliness_points": "mailprobe.timeliness",
    "write_campaign_report": "mailprobe.campaign_report",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mailprobe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
