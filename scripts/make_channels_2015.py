#!/usr/bin/env python3
"""Write samples/2015/channels.csv: invented enquiry channels for the 118 opened 2015 sites.

Every opened site of samples/2015/agencies.csv (22 city-level, 96 county-level) gets a
consultation (咨询) and a complaint (投诉) channel; counties also get a supervision (监督)
channel. Addresses use the reserved `.test` domain of each site's fictional website.
As in real life:

* many county bureaus have mailboxes on their city's domain (gz01.zixun@hbj.gz.gd.test);
* some bureaus read consultations and complaints in one mailbox (局长信箱);
* a few bureaus offer only a web form (https://hbj.xx.gd.test/hdjl/), which an
  operator submits by hand.

The output is byte for byte the same for the same seed:

    python scripts/make_channels_2015.py                # seed 2015, into samples/2015/
    python scripts/make_channels_2015.py --seed 7 --out /tmp/channels.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AGENCIES = ROOT / "samples" / "2015" / "agencies.csv"
DEFAULT_OUT = ROOT / "samples" / "2015" / "channels.csv"

SHARE_CITY_DOMAIN = 0.6  # share of counties whose mailboxes live on the city's domain
ONE_MAILBOX = 0.12  # share of sites reading consultations and complaints in one mailbox
FORM_ONLY_CITIES = 1
FORM_ONLY_COUNTIES = 5


def _host(url: str) -> str:
    host = urlsplit(url).hostname
    if not host or not host.startswith("hbj."):
        raise SystemExit(f"unexpected website {url!r}: expected https://hbj.<code>.gd.test/")
    return host


def _read_agencies(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [row for row in csv.DictReader(f) if row["网站"].strip()]


def _rows(site: dict[str, str], city_host: str, rng: random.Random,
          form_only: bool) -> list[tuple[str, str, str]]:
    name, county = site["单位"], site["级别"] == "县级"
    host = _host(site["网站"])
    kinds = ["咨询", "投诉", "监督"] if county else ["咨询", "投诉"]
    if form_only:
        return [(name, kind, f"https://{host}/hdjl/") for kind in kinds]
    code = host.split(".")[1]
    on_city = county and rng.random() < SHARE_CITY_DOMAIN
    domain, prefix = (city_host, f"{code}.") if on_city else (host, "")
    one_mailbox = rng.random() < ONE_MAILBOX
    local = {"咨询": "xinxiang" if one_mailbox else "zixun",
             "投诉": "xinxiang" if one_mailbox else "tousu", "监督": "jiandu"}
    return [(name, kind, f"{prefix}{local[kind]}@{domain}") for kind in kinds]


def build(agencies: Path, seed: int) -> str:
    sites = _read_agencies(agencies)
    rng = random.Random(seed)
    cities = {s["单位"]: _host(s["网站"]) for s in sites if s["级别"] == "市级"}
    city_names = [s["单位"] for s in sites if s["级别"] == "市级"]
    county_names = [s["单位"] for s in sites if s["级别"] == "县级"]
    form_only = set(rng.sample(city_names, FORM_ONLY_CITIES))
    form_only |= set(rng.sample(county_names, FORM_ONLY_COUNTIES))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["单位", "渠道", "地址"])
    for site in sites:
        city_host = cities.get(site["所属地市"], _host(site["网站"]))
        writer.writerows(_rows(site, city_host, rng, site["单位"] in form_only))
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=2015, help="random seed (default: 2015)")
    parser.add_argument("--agencies", type=Path, default=DEFAULT_AGENCIES,
                        help=f"the agency list (default: {DEFAULT_AGENCIES})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"the CSV to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    text = build(args.agencies, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {text.count(chr(10)) - 1} channels to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
