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
    "Ranking",
    "Rubric",
    "RubricError",
    "Scores",
    "SheetError",
    "Statistics",
    "SystemClock",
    "competition_rank",
    "evaluate",
    "load_rubric",
    "rank_sites",
    "read_agencies",
    "read_score_sheet",
    "score_sheets",
    "statistics",
]
