"""`mailprobe override`: an evaluator replaces a leaf's computed points, with a reason."""

from __future__ import annotations

import click

from mailprobe.cli import main
from mailprobe.cli._output import text_table
from mailprobe.cli.store import _db_option, _open
from mailprobe.overrides import OverrideRecord, add_override, list_overrides, withdraw_override
from mailprobe.rubric import load_rubric
from mailprobe.tables import Column, Format, Table


@main.group()
def override() -> None:
    """Evaluators' overrides of leaf points (kept with who, when and why).

    `mailprobe rank/report --campaign ...` apply the active overrides of their rubric and
    show each one, with its reason and what it replaced, in the report.

    \b
    Example:
      mailprobe override add --rubric city --agency 广州市 --leaf 答复实效 --points 3 \\
          --reason "答复经门户网站公开，邮件未收到" --by 评估员甲
      mailprobe override list
      mailprobe override withdraw 1 --by 评估员乙 --reason "复核：邮件答复已匹配"
    """


@override.command("add")
@click.option("--rubric", default="city", show_default=True, metavar="NAME|FILE",
              help="The rubric the leaf belongs to: 'city', 'county' or a rubric TOML file.")
@click.option("--agency", required=True, help="Agency name as in the directory and sheets.")
@click.option("--leaf", required=True, metavar="LEAF",
              help="Leaf name or unique trailing path, e.g. 答复实效 or 咨询投诉/渠道功能.")
@click.option("--points", required=True, type=float, help="The points the leaf gets.")
@click.option("--reason", required=True, help="Why the computed points are wrong.")
@click.option("--by", "by", required=True, help="The evaluator's name.")
@_db_option
def add_command(rubric: str, agency: str, leaf: str, points: float, reason: str, by: str,
                db_url: str | None) -> None:
    """Set a leaf's points for one agency; a previous override of it is closed.

    \b
    Example:
      mailprobe override add --rubric county --agency 广州市第01县区 --leaf 网上咨询 \\
          --points 1 --reason "表单提交成功，回执截图存档" --by 评估员甲
    """
    rub = load_rubric(rubric)
    with _open(db_url) as store:
        rec = add_override(store, rub, agency, leaf, points, reason, by)
    click.echo(f"override {rec.id}: {rec.agency} {rec.leaf} = {rec.points:g} ({rec.rubric})")


@override.command("withdraw")
@click.argument("override_id", metavar="ID", type=int)
@click.option("--reason", required=True, help="Why the override no longer holds.")
@click.option("--by", "by", required=True, help="The evaluator's name.")
@_db_option
def withdraw_command(override_id: int, reason: str, by: str, db_url: str | None) -> None:
    """Close an override: the computed points count again; the record is kept.

    \b
    Example:
      mailprobe override withdraw 3 --by 评估员乙 --reason "复核后撤销"
    """
    with _open(db_url) as store:
        rec = withdraw_override(store, override_id, by, reason)
    click.echo(f"override {rec.id} withdrawn: {rec.agency} {rec.leaf}")


@override.command("list")
@click.option("--rubric", default=None, metavar="NAME", help="Only this rubric's overrides.")
@click.option("--all", "show_all", is_flag=True, help="Also the withdrawn and superseded ones.")
@_db_option
def list_command(rubric: str | None, show_all: bool, db_url: str | None) -> None:
    """The overrides in force (with --all: every one ever recorded).

    \b
    Example:
      mailprobe override list --rubric city --all
    """
    with _open(db_url) as store:
        records = list_overrides(store, rubric, include_withdrawn=show_all)
    if not records:
        click.echo("no overrides")
        return
    click.echo(text_table(_table(records)))


def _table(records: list[OverrideRecord]) -> Table:
    cols = (Column("id", "编号", Format.INT), Column("rubric", "指标体系", Format.TEXT),
            Column("agency", "单位", Format.TEXT), Column("leaf", "指标", Format.TEXT),
            Column("points", "调整为", Format.SCORE), Column("reason", "理由", Format.TEXT),
            Column("by", "评估员", Format.TEXT), Column("at", "时间", Format.TEXT),
            Column("withdrawn", "撤销", Format.TEXT))
    rows = tuple((r.id, r.rubric, r.agency, r.leaf, r.points, r.reason, r.by,
                  f"{r.at:%Y-%m-%d %H:%M}",
                  "" if r.withdrawn_at is None else
                  f"{r.withdrawn_at:%Y-%m-%d} {r.withdrawn_by}：{r.withdrawn_reason}")
                 for r in records)
    return Table("overrides", "人工调整", cols, rows)
