#!/usr/bin/env python3
"""Extract the published tables of the 2015 seed report into tests/golden/seed_2015.json.

The seed is a text rendering of the report: tables are tab-separated lines under a
caption line ("图表 2-1 ..."). Every number in the golden file is parsed from the text
here; nothing is typed by hand. The script fails loudly (exit status 1) when a table
cannot be found, has the wrong number of rows, or disagrees with itself (a group sum
that is not the printed total, a 合计 row that is not the sum of its rows).

    python scripts/extract_seed_tables.py                      # default seed, default output
    python scripts/extract_seed_tables.py SEED.txt -o out.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = ROOT.parent / "shared" / "seed" / "000_3853b61c60ff5454.txt"
DEFAULT_OUT = ROOT / "tests" / "golden" / "seed_2015.json"
GENERATED_BY = "scripts/extract_seed_tables.py"

CITY_GROUPS = ("信息公开", "在线服务", "公众互动", "网站建设")

_CAPTION = re.compile(r"^图表 (\d+-\d+) ([^，。；]*)$")
_NUM = r"\d+(?:\.\d+)?"
_RATE = re.compile(r"^(\d+)\.\s*(\d+)\s*%$")  # tolerates the seed's "40. 00%"
_NOTE = re.compile(r"^[（(][^\t]*[)）]$")
_GROUP_HEAD = re.compile(r"^(.+?)\s*[（(]\s*(\d+)\s*分?\s*[)）]$")


class SeedError(Exception):
    """The seed does not contain what this script expects."""


# ---------------------------------------------------------------------------- helpers


def number(text: str, where: str) -> int | float:
    """A printed number as int when whole in print (``42``), else float (``41.5``)."""
    t = text.strip()
    if not re.fullmatch(_NUM, t):
        raise SeedError(f"{where}: not a number: {text!r}")
    return float(t) if "." in t else int(t)


def rate(text: str, where: str) -> float:
    """A printed percentage ("33.70%", "40. 00%") as a number of percent (33.7)."""
    m = _RATE.fullmatch(text.strip())
    if not m:
        raise SeedError(f"{where}: not a percentage: {text!r}")
    return float(f"{m.group(1)}.{m.group(2)}")


def squash(text: str) -> str:
    """A name with the spaces of line wrapping removed ("信息 公开" -> "信息公开")."""
    return re.sub(r"\s+", "", text)


def captions(lines: Sequence[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        m = _CAPTION.match(line.strip())
        if m:
            found.setdefault(m.group(1), []).append(i)
    return found


def table_lines(lines: Sequence[str], caps: dict[str, list[int]], table: str) -> list[str]:
    """The tab-separated lines of one table: from its caption to the next prose line."""
    hits = caps.get(table, [])
    if len(hits) != 1:
        raise SeedError(f"图表 {table}: expected one caption line, found {len(hits)}")
    out: list[str] = []
    for line in lines[hits[0] + 1:]:
        stripped = line.strip()
        if "\t" in line:
            out.append(line.rstrip("\n"))
            continue
        if not stripped or _NOTE.match(stripped):
            continue  # blank lines, page breaks and "（数据统计来源于…）" notes
        break
    if not out:
        raise SeedError(f"图表 {table}: caption found but no tab-separated rows under it")
    return out


def expect(count: int, expected: int, what: str) -> None:
    if count != expected:
        raise SeedError(f"{what}: expected {expected} rows, found {count}")


def match_rows(rows: Sequence[str], pattern: str, table: str) -> list[re.Match[str]]:
    rx = re.compile(pattern)
    return [m for m in (rx.fullmatch(r.strip("\n")) for r in rows) if m]


# ---------------------------------------------------------------------------- tables


def table_1_1(lines: Sequence[str], caps: dict[str, list[int]]) -> dict[str, Any]:
    rows = table_lines(lines, caps, "1-1")
    city_rows = [r for r in rows if r.startswith("地级市")]
    expect(len(city_rows), 1, "图表 1-1 city row")
    label, _, names = city_rows[0].partition("\t")
    cities = names.split()
    declared = re.search(r"[（(](\d+)\s*个[)）]", label)
    if not declared or int(declared.group(1)) != len(cities):
        raise SeedError(f"图表 1-1: the row says {label!r} but lists {len(cities)} units")
    expect(len(cities), 22, "图表 1-1 cities")
    county_rows = [r for r in rows if r.startswith("县区级")]
    expect(len(county_rows), 1, "图表 1-1 county row")
    m = re.search(r"[（(](\d+)\s*个[)）]", county_rows[0])
    if not m:
        raise SeedError("图表 1-1: no county count")
    return {"cities": cities, "counties": int(m.group(1))}


def table_2_1(lines: Sequence[str], caps: dict[str, list[int]]) -> dict[str, Any]:
    rows = table_lines(lines, caps, "2-1")
    header = rows[0].split("\t")
    columns = [squash(re.sub(r"[（(].*", "", h)) for h in header[2:6]]
    if tuple(columns) != CITY_GROUPS:
        raise SeedError(f"图表 2-1: unexpected header {header!r}")
    weights = [int(re.search(r"(\d+)", h).group(1)) for h in header[2:6]]  # type: ignore[union-attr]
    n = rf"({_NUM})"
    found = match_rows(rows, rf"(\d+)\t(\S+)\t{n}\t{n}\t{n}\t{n}\t{n}", "2-1")
    expect(len(found), 22, "图表 2-1")
    cities = []
    for m in found:
        where = f"图表 2-1 {m.group(2)}"
        scores = {g: number(m.group(3 + k), where) for k, g in enumerate(CITY_GROUPS)}
        total = number(m.group(7), where)
        if abs(sum(scores.values()) - total) > 1e-9:
            raise SeedError(f"{where}: the four groups add up to {sum(scores.values())}, "
                            f"not the printed total {total}")
        cities.append({"rank": int(m.group(1)), "name": m.group(2), **scores, "total": total})
    avg = match_rows(rows, rf"平均分[:：]?\t\t{n}\t{n}\t{n}\t{n}\t{n}", "2-1")
    expect(len(avg), 1, "图表 2-1 average row")
    average = {g: number(avg[0].group(1 + k), "图表 2-1 平均分") for k, g in enumerate(CITY_GROUPS)}
    average["total"] = number(avg[0].group(5), "图表 2-1 平均分")
    return {"group_weights": dict(zip(CITY_GROUPS, weights, strict=True)),
            "cities": cities, "average": average}


def stage_table(lines: Sequence[str], caps: dict[str, list[int]], table: str,
                n_stages: int) -> dict[str, Any]:
    rows = table_lines(lines, caps, table)
    stages: list[dict[str, Any]] = []
    total: dict[str, Any] | None = None
    for row in rows:
        cells = row.split("\t")
        if len(cells) < 3 or not re.fullmatch(r"\d+", cells[1].strip()):
            continue
        label = cells[0].strip()
        name = re.split(r"\s*[（(]", label)[0].strip()
        entry: dict[str, Any] = {"stage": name, "count": int(cells[1]),
                                 "share_pct": rate(cells[2], table),
                                 "share_printed": cells[2].strip()}
        if name == "合计":
            total = entry
        else:
            bounds = label[len(name):].strip()
            entry["bounds_printed"] = bounds.strip("()（）").strip()
            stages.append(entry)
    expect(len(stages), n_stages, f"图表 {table}")
    if total is None:
        raise SeedError(f"图表 {table}: no 合计 row")
    if sum(s["count"] for s in stages) != total["count"]:
        raise SeedError(f"图表 {table}: the counts do not add up to 合计 {total['count']}")
    return {"stages": stages, "total": {"count": total["count"],
                                        "share_pct": total["share_pct"],
                                        "share_printed": total["share_printed"]}}


def leaf_table(lines: Sequence[str], caps: dict[str, list[int]], table: str,
               n_leaves: int) -> dict[str, Any]:
    """A leaf statistics table: ... | leaf | description | weight | average | rate."""
    rows = table_lines(lines, caps, table)
    leaves: list[dict[str, Any]] = []
    group: dict[str, Any] | None = None
    parent: str | None = None  # a merged cell: the second level carries down
    for row in rows:
        cells = [c.strip() for c in row.split("\t")]
        if len(cells) < 5 or not re.fullmatch(r"\d+", cells[-3]) or not _RATE.fullmatch(cells[-1]):
            continue  # header rows, wrapped description lines
        names = []
        for cell in cells[:-4]:
            m = _GROUP_HEAD.fullmatch(cell)
            if m:
                if group is None:
                    group = {"name": squash(m.group(1)), "weight": int(m.group(2))}
            elif cell and cell != "——":
                names.append(squash(cell))
        if not names:
            raise SeedError(f"图表 {table}: a row without a leaf name: {row!r}")
        if "——" in cells[:-4]:
            parent = None  # "搜索功能 | ——": a leaf at the second level
        elif len(names) > 1:
            parent = names[-2]
        where = f"图表 {table} {names[-1]}"
        leaves.append({
            "leaf": names[-1],
            "path": [*([parent] if parent else []), names[-1]],  # the group is added below
            "weight": number(cells[-3], where),
            "average": number(cells[-2], where),
            "rate_pct": rate(cells[-1], where),
            "rate_printed": cells[-1],
        })
    expect(len(leaves), n_leaves, f"图表 {table}")
    if group is None:
        raise SeedError(f"图表 {table}: no first-level header like '信息公开 (45)'")
    for leaf in leaves:  # the header may come after the first row (a page break, 图表 4-5)
        leaf["path"] = [group["name"], *leaf["path"]]
    weight_sum = sum(leaf["weight"] for leaf in leaves)
    if weight_sum != group["weight"]:
        raise SeedError(f"图表 {table}: leaf weights add up to {weight_sum}, "
                        f"the header says {group['weight']}")
    return {"group": group["name"], "group_weight": group["weight"], "leaves": leaves}


def table_4_1(lines: Sequence[str], caps: dict[str, list[int]],
              cities: Sequence[str]) -> dict[str, Any]:
    rows = table_lines(lines, caps, "4-1")
    found = match_rows(rows, r"(\d+)\t(\S+)\t(\d+)\t(\d+)\t([\d. ]+%)", "4-1")
    expect(len(found), 21, "图表 4-1")
    out: list[dict[str, Any]] = []
    for m in found:
        short = m.group(2)
        full = [c for c in cities if c.startswith(short) and c.endswith("市")]
        if len(full) != 1:
            raise SeedError(f"图表 4-1: {short} is not one city of 图表 1-1")
        counties, opened = int(m.group(3)), int(m.group(4))
        if opened > counties:
            raise SeedError(f"图表 4-1 {short}: more sites than counties")
        out.append({"no": int(m.group(1)), "name": short, "city": full[0],
                    "counties": counties, "opened": opened,
                    "rate_pct": rate(m.group(5), f"图表 4-1 {short}"),
                    "rate_printed": m.group(5)})
    total = match_rows(rows, r"合计\t\t(\d+)\t(\d+)\t([\d. ]+%)", "4-1")
    expect(len(total), 1, "图表 4-1 合计 row")
    t = total[0]
    summary: dict[str, Any] = {"counties": int(t.group(1)), "opened": int(t.group(2)),
               "rate_pct": rate(t.group(3), "图表 4-1 合计"), "rate_printed": t.group(3)}
    if summary["counties"] != sum(r["counties"] for r in out) or (
            summary["opened"] != sum(r["opened"] for r in out)):
        raise SeedError("图表 4-1: 合计 is not the sum of the rows")
    if len({r["city"] for r in out}) != len(out):
        raise SeedError("图表 4-1: a city appears twice")
    return {"cities": out, "total": summary}


def vulnerabilities(text: str) -> dict[str, Any]:
    """Chapter 3 (一) 5: "出现 6 个高危漏洞，分别是肇庆市 3 个、云浮市 3 个，其余单位均未…"."""
    m = re.search(r"出现\s*(\d+)\s*个高危漏洞，分别是(.+?)，其余单位均未扫描出高危漏洞", text)
    if not m:
        raise SeedError("chapter 3: the sentence on high-risk vulnerabilities is not found")
    per_site = {}
    for part in m.group(2).split("、"):
        pm = re.fullmatch(r"\s*(\S+?)\s*(\d+)\s*个\s*", part)
        if not pm:
            raise SeedError(f"chapter 3: cannot read {part!r} as '<site> <n> 个'")
        per_site[pm.group(1)] = int(pm.group(2))
    total = int(m.group(1))
    if sum(per_site.values()) != total:
        raise SeedError(f"chapter 3: the vulnerabilities per site do not add up to {total}")
    return {"total": total, "per_site": per_site, "others": 0,
            "quote": m.group(0)}


def appendix(lines: Sequence[str], title: str, end: Callable[[str], bool]) -> dict[str, Any]:
    """Appendix rows: names ... | description | weight; the group headers as printed."""
    starts = [i for i, line in enumerate(lines) if line.startswith(title)]
    expect(len(starts), 1, f"{title} title line")
    leaves: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    total = None
    for line in lines[starts[0] + 1:]:
        if end(line):
            cells = [c.strip() for c in line.split("\t")]
            total = number(cells[-1], f"{title} 合计")
            break
        if "\t" not in line:
            if line.strip():
                break
            continue
        cells = [c.strip() for c in line.split("\t")]
        if cells[0] == "一级指标" or not re.fullmatch(r"\d+", cells[-1]):
            continue
        names = [squash(c) for c in cells[:-2] if c and c != "——"]
        if cells[0]:
            m = _GROUP_HEAD.fullmatch(cells[0])
            if m:
                groups.append({"name": squash(m.group(1)), "weight_printed": int(m.group(2)),
                               "at_leaf": names[-1]})
            else:
                groups.append({"name": squash(cells[0]), "weight_printed": None,
                               "at_leaf": names[-1]})
        leaves.append({"leaf": names[-1], "weight": number(cells[-1], f"{title} {names[-1]}")})
    return {"groups_printed": groups, "leaves": leaves, "total_printed": total}


# ---------------------------------------------------------------------------- main


def extract(seed: Path) -> dict[str, Any]:
    text = seed.read_text(encoding="utf-8")
    lines = text.splitlines()
    caps = captions(lines)
    t11 = table_1_1(lines, caps)
    t21 = table_2_1(lines, caps)
    if sorted(c["name"] for c in t21["cities"]) != sorted(t11["cities"]):
        raise SeedError("图表 2-1 and 图表 1-1 list different cities")
    t41 = table_4_1(lines, caps, t11["cities"])
    if t41["total"]["counties"] != t11["counties"]:
        raise SeedError("图表 4-1 and 图表 1-1 count different numbers of counties")
    data: dict[str, Any] = {
        "generated_by": GENERATED_BY,
        "source": seed.name,
        "note": "Every number is parsed from the seed text; regenerate, never edit by hand.",
        "table_1_1": t11,
        "table_2_1": t21,
        "table_2_3": stage_table(lines, caps, "2-3", 5),
        "table_2_5": leaf_table(lines, caps, "2-5", 21),
        "table_2_6": leaf_table(lines, caps, "2-6", 7),
        "table_2_7": leaf_table(lines, caps, "2-7", 4),
        "table_2_8": leaf_table(lines, caps, "2-8", 4),
        "table_4_1": t41,
        "table_4_2": stage_table(lines, caps, "4-2", 5),
        "table_4_5": leaf_table(lines, caps, "4-5", 5),
        "table_4_6": leaf_table(lines, caps, "4-6", 5),
        "table_4_7": leaf_table(lines, caps, "4-7", 2),
        "table_4_8": leaf_table(lines, caps, "4-8", 2),
        "vulnerabilities": vulnerabilities(text),
        "appendix_1": appendix(lines, "附件 1", lambda s: s.startswith("合计")),
        "appendix_2": appendix(lines, "附件 2", lambda s: False),
    }
    for key, group in zip(("table_2_5", "table_2_6", "table_2_7", "table_2_8"), CITY_GROUPS,
                          strict=True):
        if data[key]["group"] != group:
            raise SeedError(f"{key}: header names {data[key]['group']}, expected {group}")
    unknown = [s for s in data["vulnerabilities"]["per_site"] if s not in t11["cities"]]
    if unknown:
        raise SeedError(f"chapter 3: vulnerabilities of unknown sites {unknown}")
    expect(len(data["appendix_1"]["leaves"]), 36, "附件 1 leaves")
    expect(len(data["appendix_2"]["leaves"]), 14, "附件 2 leaves")
    opened = data["table_4_2"]["stages"]
    if sum(s["count"] for s in opened if s["stage"] != "未开通") != t41["total"]["opened"]:
        raise SeedError("图表 4-2 stage counts do not add up to the opened sites of 图表 4-1")
    return data


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("seed", nargs="?", type=Path, default=DEFAULT_SEED,
                        help=f"the seed report as text (default: {DEFAULT_SEED})")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT,
                        help=f"where to write the JSON (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        data = extract(args.seed)
    except FileNotFoundError:
        print(f"error: seed file not found: {args.seed}", file=sys.stderr)
        return 1
    except SeedError as exc:
        print(f"error: {args.seed}: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(dump(data), encoding="utf-8", newline="\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
