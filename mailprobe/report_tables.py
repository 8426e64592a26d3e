"""The report's tables and charts, built from a ranking and its statistics (pure)."""

from __future__ import annotations

from mailprobe.rank import Ranking, Statistics
from mailprobe.rubric import RateMethod
from mailprobe.sheets import Level
from mailprobe.tables import Cell, Chart, ChartKind, Column, Format, Report, Section, Table

__all__ = ["build_report", "combine_reports", "ranking_table"]


def _g(value: float) -> str:
    return f"{value:g}"


def _population_note(ranking: Ranking) -> str:
    n = len(ranking.sites)
    if ranking.not_opened:
        return (f"统计范围：已开通网站的 {n} 个单位（另有 {len(ranking.not_opened)} 个未开通，"
                "不参与得分统计）。")
    return f"统计范围：参评的 {n} 个单位。"


def _method_note(method: RateMethod) -> str:
    return f"指标组得分率计算方法：{method.label}。"


def ranking_table(ranking: Ranking, stats: Statistics) -> Table:
    """图表 2-1: rank, agency, first-level group scores, total, stage; the average row."""
    rubric = ranking.rubric
    tops = [(gi, g) for gi, g in enumerate(rubric.groups) if g.depth == 1]
    with_city = any(a.level is Level.COUNTY for a in ranking.agencies)
    city_of = {a.name: a.city for a in ranking.agencies}
    columns = [Column("rank", "排名", Format.INT), Column("agency", "单位名称")]
    if with_city:
        columns.append(Column("city", "所属地市"))
    columns += [Column(f"g{gi}", f"{g.name}（{_g(g.weight)}）", Format.SCORE) for gi, g in tops]
    scale = f"（{_g(rubric.scale_to)}）"
    columns += [Column("total", f"总得分{scale}", Format.SCORE), Column("stage", "发展阶段")]
    rows: list[tuple[Cell, ...]] = []
    for i in ranking.order:
        name = ranking.sites[i]
        row: list[Cell] = [int(ranking.rank[i]), name]
        if with_city:
            row.append(city_of.get(name, ""))
        row += [float(ranking.groups[i, gi]) for gi, _ in tops]
        row += [float(ranking.total[i]), rubric.stages[int(ranking.stage[i])].name]
        rows.append(tuple(row))
    avg: list[Cell] = [None, "平均分"]
    if with_city:
        avg.append(None)
    avg += [stats.averages[g.name] for _, g in tops] + [stats.averages["total"], None]
    note = ("排名采用标准竞赛排名法：总分相同者名次并列，其后名次顺延跳过。"
            + ("县级总分为 14 项得分折算为百分制（得分 ÷ 14 × 100）。"
               if rubric.scale_to != rubric.total else "") + _population_note(ranking))
    return Table("ranking", f"{rubric.title}综合排名", tuple(columns), tuple(rows),
                 (tuple(avg),), note)


def _group_table(ranking: Ranking, stats: Statistics) -> tuple[Table, Chart]:
    tops = [s for s in stats.indicators if s.depth == 1 and not s.is_leaf]
    rows = tuple((s.name, s.weight, s.mean, s.rate) for s in tops)
    total = ranking.rubric.scale_to
    footer = (("总得分", total, stats.averages["total"],
               stats.averages["total"] / total if total else 0.0),)
    table = Table("groups", "一级指标平均得分与得分率",
                  (Column("name", "一级指标"), Column("weight", "权重", Format.SCORE),
                   Column("mean", "平均分", Format.SCORE),
                   Column("rate", "平均得分率", Format.PERCENT)),
                  rows, footer, _method_note(stats.method) + _population_note(ranking))
    chart = Chart("group_rates", "一级指标平均得分率", ChartKind.BAR,
                  tuple(s.name for s in tops), tuple(s.rate for s in tops), Format.PERCENT, 1.0,
                  _method_note(stats.method))
    return table, chart


def _leaf_tables(ranking: Ranking, stats: Statistics) -> list[Table]:
    tables = []
    top_names = [g.name for g in ranking.rubric.groups if g.depth == 1]
    deepest = max(len(leaf.path) for leaf in ranking.rubric.leaves)
    level_titles = ("一级指标", "二级指标", "三级指标", "四级指标")[1:deepest]
    for k, top in enumerate(top_names, start=1):
        members = [s for s in stats.indicators if s.key.split("/")[0] == top and s.depth > 1]
        rows: list[tuple[Cell, ...]] = []
        for s in members:
            parts = s.key.split("/")[1:]
            label: list[Cell] = [*parts, *[""] * (len(level_titles) - len(parts))]
            kind = "小计" if not s.is_leaf else ""
            rows.append((*label, kind, s.weight, s.mean, s.rate))
        head = next(s for s in stats.indicators if s.key == top)
        blanks: list[Cell] = [""] * (len(level_titles) - 1)
        footer = ((top, *blanks, "合计", head.weight, head.mean, head.rate),)
        columns = (*(Column(f"l{i}", t) for i, t in enumerate(level_titles)),
                   Column("kind", ""), Column("weight", "权重", Format.SCORE),
                   Column("mean", "平均分", Format.SCORE),
                   Column("rate", "平均得分率", Format.PERCENT))
        tables.append(Table(f"leaves_{k}", f"{top}指标得分分析表", columns, tuple(rows), footer,
                            _method_note(stats.method) + "三级指标得分率 = 平均分 ÷ 权重。"
                            + _population_note(ranking)))
    return tables


def _stage_section(ranking: Ranking, stats: Statistics) -> Section:
    rows = []
    for s in stats.stages:
        if s.lower is None:
            span = "—"
        elif s.upper is None:
            span = f"{_g(s.lower)} ≤ 绩效 ≤ {_g(ranking.rubric.scale_to)}"
        else:
            span = f"{_g(s.lower)} ≤ 绩效 < {_g(s.upper)}"
        rows.append((s.name, span, s.count, s.share))
    total = sum(s.count for s in stats.stages)
    table = Table("stages", "发展阶段分布", (Column("stage", "发展阶段"), Column("span", "区间"),
                  Column("count", "数量", Format.INT), Column("share", "所占比例", Format.PERCENT)),
                  tuple(rows), (("合计", None, total, 1.0 if total else 0.0),),
                  f"所占比例 = 数量 ÷ {ranking.population}（参评单位总数"
                  + ("，含未开通" if ranking.not_opened else "") + "），由数量直接计算。")
    chart = Chart("stage_chart", "发展阶段分布（单位数）", ChartKind.BAR,
                  tuple(s.name for s in stats.stages), tuple(float(s.count) for s in stats.stages),
                  Format.INT)
    return Section("发展阶段", (table,), (chart,))


def _extremes_section(ranking: Ranking, stats: Statistics) -> Section:
    rows = tuple((e.of, e.weight, e.highest, "、".join(e.highest_sites), e.lowest,
                  "、".join(e.lowest_sites), e.gap) for e in stats.extremes)
    extremes = Table("extremes", "最高分、最低分与分差",
                     (Column("of", "指标"), Column("weight", "满分", Format.SCORE),
                      Column("hi", "最高分", Format.SCORE), Column("hi_sites", "最高分单位"),
                      Column("lo", "最低分", Format.SCORE), Column("lo_sites", "最低分单位"),
                      Column("gap", "分差", Format.SCORE)), rows, (), _population_note(ranking))
    n = len(ranking.sites)
    counts = Table("thresholds", "分数段统计",
                   (Column("rule", "条件"), Column("count", "单位数", Format.INT),
                    Column("share", "占参评网站比例", Format.PERCENT)),
                   tuple((label, c, c / n if n else 0.0) for label, c in stats.thresholds), (),
                   _population_note(ranking))
    tables = (extremes, counts) if stats.thresholds else (extremes,)
    return Section("分差与分数段", tables)


def _opening_section(stats: Statistics) -> Section:
    rows = tuple((i, r.city, r.agencies, r.opened, r.rate)
                 for i, r in enumerate(stats.opening, start=1))
    t = stats.opening_total
    footer = (("合计", None, t.agencies, t.opened, t.rate),) if t else ()
    table = Table("opening", "县区级网站开通情况", (Column("no", "序号", Format.INT),
                  Column("city", "地市"), Column("agencies", "县（镇）区数量", Format.INT),
                  Column("opened", "网站开通数量", Format.INT),
                  Column("rate", "网站开通率", Format.PERCENT)), rows, footer,
                  "开通率 = 开通网站的县区数 ÷ 县区总数；按开通率、县区数从高到低排列。")
    chart = Chart("opening_chart", "各地市县区级网站开通率", ChartKind.HBAR,
                  tuple(r.city for r in stats.opening), tuple(r.rate for r in stats.opening),
                  Format.PERCENT, 1.0)
    return Section("网站开通情况", (table,), (chart,))


def _detail_section(ranking: Ranking) -> Section:
    rubric = ranking.rubric
    names = rubric.short_names()
    columns = (Column("agency", "单位名称"),
               *(Column(f"leaf{j}", f"{names[j]}（{_g(leaf.weight)}）", Format.SCORE)
                 for j, leaf in enumerate(rubric.leaves)))
    rows = tuple((ranking.sites[i], *(float(v) for v in ranking.scores.leaf[i]))
                 for i in ranking.order)
    detail = Table("site_leaves", "各单位指标得分明细", columns, rows, (),
                   f"评分表多轮合并规则：{ranking.scores.policy.label}。")
    prov = ranking.scores.provenance
    trace = Table("provenance", "来自模拟来信或人工调整的得分",
                  (Column("agency", "单位名称"), Column("leaf", "指标"),
                   Column("points", "得分", Format.SCORE), Column("from", "来源")),
                  tuple((ranking.sites[i], rubric.leaves[j].key, float(ranking.scores.leaf[i, j]),
                         text) for (i, j), text in sorted(prov.items())), (),
                  "其余得分均来自评分表。")
    return Section("得分明细", (detail, trace) if prov else (detail,))


def build_report(ranking: Ranking, stats: Statistics, *, subtitle: str = "") -> Report:
    """Every table and chart of the report for one level, in the seed's order."""
    rubric = ranking.rubric
    group_table, group_chart = _group_table(ranking, stats)
    leaf_tables = _leaf_tables(ranking, stats)
    leaf_rates = [s for s in stats.indicators if s.is_leaf]
    leaf_chart = Chart("leaf_rates", "各指标平均得分率", ChartKind.HBAR,
                       tuple(rubric.short_names()), tuple(s.rate for s in leaf_rates),
                       Format.PERCENT, 1.0)
    sections = [Section("综合排名", (ranking_table(ranking, stats),)),
                Section("一级指标", (group_table,), (group_chart,)),
                _stage_section(ranking, stats)]
    if stats.opening:
        sections.append(_opening_section(stats))
    sections += [Section("各指标得分", tuple(leaf_tables), (leaf_chart,)),
                 _extremes_section(ranking, stats), _detail_section(ranking)]
    facts = (("指标体系", rubric.name), ("参评网站", str(len(ranking.sites))),
             ("评分表合并", ranking.scores.policy.label),
             ("得分率方法", stats.method.label), ("指标体系版本", rubric.digest or "—"))
    return Report(f"{rubric.title}绩效评估结果", subtitle or rubric.source, tuple(sections), facts)


def combine_reports(parts: list[tuple[str, str, Report]], title: str, subtitle: str) -> Report:
    """One report from several levels: (id prefix, section prefix, report) each."""
    from dataclasses import replace

    sections = []
    facts: list[tuple[str, str]] = []
    for prefix, label, report in parts:
        for s in report.sections:
            sections.append(replace(
                s, title=f"{label} · {s.title}",
                tables=tuple(replace(t, id=f"{prefix}_{t.id}") for t in s.tables),
                charts=tuple(replace(c, id=f"{prefix}_{c.id}") for c in s.charts)))
        facts += [(f"{label} · {k}", v) for k, v in report.facts]
    return Report(title, subtitle, tuple(sections), tuple(facts))
