"""mailprobe: simulated-citizen probes of government websites and the indicator engine."""

from mailprobe.clock import Clock, ManualClock, SystemClock
from mailprobe.engine import Evaluation, evaluate
from mailprobe.errors import (
    CalendarError,
    ConfigError,
    InputError,
    MailprobeError,
    RubricError,
    SheetError,
)
from mailprobe.rank import Ranking, Statistics, competition_rank, rank_sites, statistics
from mailprobe.rubric import Rubric, load_rubric
from mailprobe.score import DerivedScore, MergePolicy, Override, Scores, score_sheets
from mailprobe.sheets import Agency, read_agencies, read_score_sheet
from mailprobe.timeliness import ProbeTiming, load_queue_method, timeliness_points
from mailprobe.workdays import WorkCalendar, default_calendar, load_calendar

__all__ = [
    "Agency",
    "CalendarError",
    "Clock",
    "ConfigError",
    "DerivedScore",
    "Evaluation",
    "InputError",
    "MailprobeError",
    "ManualClock",
    "MergePolicy",
    "Override",
    "ProbeTiming",
    "Ranking",
    "Rubric",
    "RubricError",
    "Scores",
    "SheetError",
    "Statistics",
    "SystemClock",
    "WorkCalendar",
    "competition_rank",
    "default_calendar",
    "evaluate",
    "load_calendar",
    "load_queue_method",
    "load_rubric",
    "rank_sites",
    "read_agencies",
    "read_score_sheet",
    "score_sheets",
    "statistics",
    "timeliness_points",
]
