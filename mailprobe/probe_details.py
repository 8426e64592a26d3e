"""Details unique to each probe (street, 小区, site, date, time), drawn from a seed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

__all__ = [
    "DetailRequest",
    "campaign_details",
    "details_for",
    "fingerprints",
    "masked_phone",
    "place_key",
]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Word lists. Names are invented from common elements of Guangdong place names; any match with
# a real address is a coincidence, which is fine: the letters only need to read as plausible.
# A word listed twice is drawn twice as often (plain 路 and 花园 are the commonest names).
_ROAD_CORES = _words(
    "建设 人民 解放 新华 东风 中华 文明 和平 胜利 光明 幸福 团结 朝阳 长安 青年 工业 环城 滨江 滨河"
    " 江南 江北 新港 白云 黄岗 龙华 金沙 银河 翠竹 松岭 竹园 桂花 荔枝 榕树 紫荆 木棉 凤凰 青山"
    " 石岗 沙岗 西湖 东湖 南湖 北岭 兴华 兴业 振兴 繁荣 育才 学府 文昌 文化 体育 海滨 港湾 金湾"
    " 华侨 侨兴 同德 同福 永福 岭南 南粤 粤华 丰乐 康乐 安乐 太平 永安 怡安 嘉禾 禾丰 田心 新塘"
    " 石井 沙湾 龙溪 鹤洲 凤岗 南岸 金山 银山 铁岗 白沙 红岭 红棉 双拥 迎宾 站前 东升 西昌 南华"
    " 北兴 中兴 长兴 长江 珠江 东江 西江 北江 新兴 德政 文德 仁和 信义 民生 民主 复兴 五一 八一"
    " 建国 国庆 新风 春风 环市 沿江 滨海 海景 绿景 锦绣 锦华 富华 华强 华富 金华 银华 宏图 鸿运"
    " 碧桂 前进 红星 向阳 东兴 西华 南昌 广源 富民 裕华 荣华 跃进 新民 松园 柏林 梅园 莲花 荷塘"
)
_ROAD_SUFFIXES = _words("路 路 路 大道 街 大街 东路 西路 南路 北路 中路 一路 二路 三路")
_COMMUNITY_CORES = _words(
    "翠湖 丽景 锦绣 御景 君悦 海逸 星河 东方 天悦 名都 雅居 幸福 阳光 春晖 怡景 丽江 金域 盛世"
    " 龙湖 美林 紫荆 桂园 荔园 榕景 碧水 青城 明珠 凯旋 骏景 帝景 翡翠 枫林 梧桐 香樟 云山 白鹭"
    " 凤凰 江南 江畔 湖畔 水岸 滨江 海景 山水 书香 文华 金沙 银湖 宝翠 东湖 西城 南国 北城 时代"
    " 世纪 都市 花城 锦江 丽水 碧海 蓝湾 金湾 龙庭 恒福 润园 祥和 康城 颐和 泰安 永宁 福星 吉祥"
    " 如意 百合 海棠 兰亭 桃源 柳岸 松涛 竹韵 荷塘 芳草 绿茵 新安 旭日 朝晖 晨曦 彩虹 星光 月华"
    " 雅湖 丹桂 金桂 银杏 华景 富丽 宏达 嘉和 嘉信 汇景 聚龙 康乐 安华 侨苑 粤秀 南湾 东园 西苑"
)
_COMMUNITY_SUFFIXES = _words(
    "花园 花园 小区 小区 新村 苑 雅苑 华庭 名苑 家园 山庄 公寓 豪庭 嘉园 大厦"
)
_BRANDS = _words(
    "鑫达 宏发 金利 永盛 恒达 顺昌 兴隆 广源 华盛 联发 精工 日升 荣丰 利达 佳美 德昌 富源 长盈"
    " 新科 盈丰 大众 裕昌 志成 俊达 明辉 建华 宝利 安达 金鹏 诚信 福满 万通 友谊 伟业 昌盛 金源"
)
_EATERY_OWNERS = _words(
    "老陈 阿强 阿华 好味来 聚福 鸿福 顺景 金记 荣记 德记 明记 兴记 老李 湘味 川香"
)
_EATERY_KINDS = _words(
    "烧腊店 大排档 砂锅粥 牛肉火锅店 肠粉店 烧烤店 湘菜馆 川菜馆 粥粉面店 茶餐厅 烤鱼店 煲仔饭"
)
_WORKSHOP_KINDS = _words(
    "五金加工坊 木工坊 不锈钢加工店 铝合金门窗店 模具加工坊 机械配件加工坊 家具加工坊 铁艺加工店"
)
_FACTORY_KINDS = _words("家具厂 塑料制品厂 橡胶制品厂 印染厂 皮具厂 饲料厂 五金喷涂厂 油墨厂")
_GARAGE_KINDS = _words("汽修厂 汽车维修店 汽车快修店 汽修美容店")
_PRINT_KINDS = _words("图文快印店 印刷厂 广告印刷店 彩印店")
_PLANT_KINDS = _words("混凝土搅拌站 石材加工场 砂场 水泥制品厂")
_RIVER_CORES = _words(
    "石溪 大塘 南岗 横沥 沙坑 东圃 下沙 龙溪 黄沙 白石 谭村 新围 后滘 西坑 茅岗 鹤岗 长岗 乌沙"
    " 水口 坑口 岗背 田心 塘尾 潭头 莲塘 竹溪 柳沥 蚬岗"
)
_RIVER_SUFFIXES = _words("涌 涌 河 河涌 排洪渠")
_SITE_PHASES = _words("二期 三期 四期 商业广场项目 安置房项目 综合体项目")
_STREET_WORKS = _words("道路改造 污水管网改造 综合管廊 人行天桥 雨污分流")
# Times and spans are phrased to fit both "一直到{t}都还没停" and "{date}{t}我去看的时候".
_NIGHT_TIMES = _words(
    "晚上十点多 晚上十一点左右 晚上十一点多 快十二点 半夜十二点多"
    " 凌晨一点左右 凌晨两点多 凌晨三点多"
)
_MORNING_TIMES = _words("早上六点多 早上七点左右 清早五点多 早上八点前后 天刚亮的时候")
_DAY_TIMES = _words("上午十点多 中午十二点左右 下午两点多 下午三点左右 下午四点多 傍晚六点左右")
_EVENING_TIMES = _words("晚上七点多 晚上八点左右 晚上九点多 晚饭后八点来钟")
_SINCE = _words("差不多一个星期了 有十来天了 快半个月了 两个多星期了 差不多一个月了 一个多月了")
_WEEKDAYS = "一二三四五六日"
_PHONE_PREFIXES = _words("138 139 137 135 136 150 151 152 158 159 186 187 188 189 133 180 181 199")
# ~2 million (street, 小区) pairs: a campaign of thousands redraws rarely and briefly.
_MAX_ATTEMPTS = 1000
_OBSERVED_WITHIN_DAYS = 9  # an observation older than that reads as stale in a complaint


class _Draw:
    """A stream of choices from one hash, stable across Python versions (unlike ``random``)."""

    def __init__(self, material: str) -> None:
        self._shake = hashlib.shake_256(material.encode("utf-8"))
        self._bytes = self._shake.digest(128)
        self._at = 0

    def below(self, n: int) -> int:
        if self._at + 4 > len(self._bytes):
            # A longer SHAKE digest starts with the shorter one: earlier draws stay as they were.
            self._bytes = self._shake.digest(2 * len(self._bytes))
        chunk = self._bytes[self._at : self._at + 4]
        self._at += 4
        return int.from_bytes(chunk, "big") % n  # bias of n / 2**32: negligible for our lists

    def pick(self, words: Sequence[str]) -> str:
        return words[self.below(len(words))]


@dataclass(frozen=True, slots=True)
class DetailRequest:
    """What :func:`campaign_details` needs to know about one probe."""

    probe_id: str
    agency: str
    city: str
    send_date: date


def details_for(
    probe_id: str, agency: str, city: str, send_date: date, seed: int | str, *, attempt: int = 0
) -> dict[str, str]:
    """The template details of one probe; the same arguments always give the same details.

    ``attempt`` draws an alternative, which :func:`campaign_details` uses when a (street, 小区)
    pair is already taken in the campaign. The observation date lies 1 to 9 days before
    ``send_date``, which should be the local (Asia/Shanghai) date the probe goes out: a
    datetime counts by its own calendar date.
    """
    draw = _Draw(f"{seed}\x1f{probe_id}\x1f{agency}\x1f{city}\x1f{attempt}")
    street = draw.pick(_ROAD_CORES) + draw.pick(_ROAD_SUFFIXES)
    street_no = f"{1 + draw.below(388)}号"
    community = draw.pick(_COMMUNITY_CORES) + draw.pick(_COMMUNITY_SUFFIXES)
    building = f"{1 + draw.below(32)}{draw.pick(('栋', '栋', '座'))}"
    day = _as_date(send_date) - timedelta(days=1 + draw.below(_OBSERVED_WITHIN_DAYS))
    earlier = day - timedelta(days=2 + draw.below(5))
    return {
        "city": city,
        "street": street,
        "street_no": street_no,
        "address": street + street_no,
        "community": community,
        "building": building,
        "floor": f"{3 + draw.below(26)}楼",
        "eatery": draw.pick(_EATERY_OWNERS) + draw.pick(_EATERY_KINDS),
        "workshop": draw.pick(_BRANDS) + draw.pick(_WORKSHOP_KINDS),
        "factory": draw.pick(_BRANDS) + draw.pick(_FACTORY_KINDS),
        "garage": draw.pick(_BRANDS) + draw.pick(_GARAGE_KINDS),
        "printshop": draw.pick(_BRANDS) + draw.pick(_PRINT_KINDS),
        "plant": draw.pick(_BRANDS) + draw.pick(_PLANT_KINDS),
        "site": _site(draw, street),
        "river": draw.pick(_RIVER_CORES) + draw.pick(_RIVER_SUFFIXES),
        "observed_date": _month_day(day),
        "observed_weekday": "周" + _WEEKDAYS[day.weekday()],
        "earlier_date": _month_day(earlier),
        "night_time": draw.pick(_NIGHT_TIMES),
        "morning_time": draw.pick(_MORNING_TIMES),
        "day_time": draw.pick(_DAY_TIMES),
        "evening_time": draw.pick(_EVENING_TIMES),
        "since": draw.pick(_SINCE),
    }


def _site(draw: _Draw, street: str) -> str:
    pattern = draw.below(3)
    if pattern == 0:
        return f"{draw.pick(_COMMUNITY_CORES)}{draw.pick(_SITE_PHASES)}工地"
    if pattern == 1:
        return f"{street}{draw.pick(_STREET_WORKS)}工地"
    return f"地铁{2 + draw.below(20)}号线{draw.pick(_ROAD_CORES)}站工地"


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _month_day(day: date) -> str:
    return f"{day.month}月{day.day}日"


def place_key(details: Mapping[str, str]) -> tuple[str, str]:
    """The pair that no two probes of a campaign share: (street, 小区)."""
    return details["street"], details["community"]


def campaign_details(
    requests: Iterable[DetailRequest], seed: int | str
) -> dict[str, dict[str, str]]:
    """Details for every probe of a campaign, no (street, 小区) pair used twice.

    Probes are taken in probe-id order and a taken pair is redrawn with the next ``attempt``,
    so adding a probe to a plan changes the details of at most the few probes that collide
    with it, never the rest.
    """
    ordered = sorted(requests, key=lambda r: r.probe_id)
    taken: set[tuple[str, str]] = set()
    result: dict[str, dict[str, str]] = {}
    for req in ordered:
        if req.probe_id in result:
            raise ValueError(f"probe id {req.probe_id!r} appears twice in the campaign")
        attempt = 0
        while True:
            details = details_for(req.probe_id, req.agency, req.city, req.send_date, seed,
                                  attempt=attempt)
            if place_key(details) not in taken:
                break
            attempt += 1
            if attempt > _MAX_ATTEMPTS:
                raise ValueError(f"no free (street, 小区) pair left for {req.probe_id!r}: "
                                 "the campaign is too large for the word lists")
        taken.add(place_key(details))
        result[req.probe_id] = details
    return result


# The details a matcher can look for in a quoted reply, most telling first. Dates, times and
# the city are left out: replies repeat them for reasons of their own ("您于11月3日来信").
_FINGERPRINT_KEYS = (
    "address", "community", "site", "river", "eatery", "workshop", "factory", "garage",
    "printshop", "plant", "street",
)


def fingerprints(details: Mapping[str, str], text: str | None = None) -> tuple[str, ...]:
    """The distinctive strings of a probe; with ``text``, only those the letter really used."""
    candidates = [details.get(key, "") for key in _FINGERPRINT_KEYS]
    if details.get("community") and details.get("building"):
        candidates.insert(1, details["community"] + details["building"])
    found: list[str] = []
    for value in candidates:
        if value and value not in found and (text is None or value in text):
            found.append(value)
    return tuple(found)


def masked_phone(key: str) -> str:
    """A mobile number with the middle digits masked (138****5678), stable for one key."""
    draw = _Draw(f"phone\x1f{key}")
    return f"{draw.pick(_PHONE_PREFIXES)}****{draw.below(10000):04d}"
