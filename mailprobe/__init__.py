"""mailprobe: simulated-citizen probes of government websites and the indicator engine."""

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
]
