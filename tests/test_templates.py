"""Probe templates and their details: every wording renders, mistakes fail at load or planning."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from pathlib import Path

import pytest

from mailprobe.compose import ProbeKind, TemplateSet
from mailprobe.directory import ChannelKind
from mailprobe.errors import ConfigError
from mailprobe.probe_details import (
    DetailRequest,
    campaign_details,
    details_for,
    fingerprints,
    masked_phone,
    place_key,
)

SEND = date(2015, 11, 5)
REQUIRED_TOPICS = {"eia_approval", "eia_notice", "env_data", "hazardous_waste", "night_noise",
                   "odour", "river_pollution", "dust"}


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return TemplateSet.load()


def variables_for(probe_id: str, agency: str = "茂名市", city: str = "茂名市") -> dict[str, str]:
    details = details_for(probe_id, agency, city, SEND, 2015)
    return dict(details, agency="茂名市环境保护局", name="林晓燕", district="茂南区",
                phone=masked_phone("p-lin"), channel="投诉")


def template_ids() -> list[str]:
    return [t.id for t in TemplateSet.load().templates]


# --- the bundled set --------------------------------------------------------------------------

def test_every_topic_has_at_least_three_wordings(templates: TemplateSet) -> None:
    per_topic = Counter(t.topic for t in templates.templates)
    assert set(per_topic) >= REQUIRED_TOPICS
    assert min(per_topic.values()) >= 3


def test_kinds_decide_the_channels(templates: TemplateSet) -> None:
    consultation = {t.id for t in templates.templates if t.kind is ProbeKind.CONSULTATION}
    complaint = {t.id for t in templates.templates if t.kind is ProbeKind.COMPLAINT}
    assert consultation and complaint
    assert {t.id for t in templates.for_channel(ChannelKind.CONSULTATION)} == consultation
    assert {t.id for t in templates.for_channel(ChannelKind.COMPLAINT)} == complaint
    assert {t.id for t in templates.for_channel(ChannelKind.SUPERVISION)} == complaint
    assert {t.id for t in templates.for_channel(ChannelKind.MAILBOX)} == consultation | complaint


@pytest.mark.parametrize("template_id", template_ids())
def test_every_template_renders_a_letter_naming_its_place(
    templates: TemplateSet, template_id: str
) -> None:
    variables = variables_for(f"r1-{template_id}")
    templates.check(template_id, variables)
    subject, body = templates.render(template_id, variables)
    assert subject and "\n" not in subject and len(subject) <= 40
    assert body.endswith("\n") and not body.endswith("\n\n") and not body.startswith("\n")
    assert variables["street"] in body and variables["community"] in body
    assert "{" not in subject + body and "None" not in body
    assert "  " not in body.replace("\n", "")  # no gaps left by an empty detail
    for line in body.splitlines():
        assert line == line.rstrip()


def test_the_wordings_vary_in_signature_and_length(templates: TemplateSet) -> None:
    variables = variables_for("r1-vary")
    bodies = [templates.render(t.id, variables)[1] for t in templates.templates]
    signed = [b for b in bodies if "林晓燕" in b]
    anonymous = [b for b in bodies if "林晓燕" not in b]
    with_phone = [b for b in bodies if variables["phone"] in b]
    assert len(signed) >= 8 and len(anonymous) >= 6 and len(with_phone) >= 5
    assert any("一位市民" in b for b in anonymous)
    lengths = sorted(len(b) for b in bodies)
    assert lengths[0] < 100 and lengths[-1] > 3 * lengths[0]
    assert len({templates.render(t.id, variables)[0] for t in templates.templates}) == len(bodies)


def test_a_detail_with_markup_is_not_escaped(templates: TemplateSet) -> None:
    variables = dict(variables_for("r1-amp"), community="A&B<花园>")
    _, body = templates.render("dust_demolition_3", variables)
    assert "A&B<花园>" in body


# --- planning-time checks ---------------------------------------------------------------------

def test_a_missing_variable_names_the_file_and_the_variable(templates: TemplateSet) -> None:
    variables = variables_for("r1-missing")
    del variables["night_time"]
    with pytest.raises(ConfigError) as caught:
        templates.check("noise_night_2", variables)
    message = str(caught.value)
    assert "noise_night_2.txt.j2" in message
    assert "'night_time'" in message
    assert caught.value.source is not None and caught.value.source.endswith("noise_night_2.txt.j2")


def test_a_template_for_the_wrong_channel_is_refused(templates: TemplateSet) -> None:
    variables = variables_for("r1-channel")
    templates.check("noise_night_2", variables, channel=ChannelKind.SUPERVISION)
    with pytest.raises(ConfigError, match="complaint and cannot go to a consultation channel"):
        templates.check("noise_night_2", variables, channel=ChannelKind.CONSULTATION)


def test_an_unknown_template_id_suggests_close_ones(templates: TemplateSet) -> None:
    with pytest.raises(ConfigError, match=r"no probe template 'noise_night_9'.*noise_night_"):
        templates.check("noise_night_9", {})


# --- load-time checks on a folder of our own --------------------------------------------------

GOOD = """{% block subject %}{{ community }}的问题{% endblock %}
{% block body %}
你好，我住在{{ street }}{{ community }}。
{% endblock %}
"""


def write_set(folder: Path, source: str, variables: str = '"community", "street"',
              kind: str = "complaint", extra: str = "") -> Path:
    (folder / "t1.txt.j2").write_text(source, encoding="utf-8")
    (folder / "index.toml").write_text(
        f'[[template]]\nid = "t1"\nkind = "{kind}"\ntopic = "dust"\ntitle = "扬尘"\n'
        f'file = "t1.txt.j2"\nvariables = [{variables}]\n{extra}', encoding="utf-8")
    return folder


def test_a_well_formed_folder_loads(tmp_path: Path) -> None:
    templates = TemplateSet.load(write_set(tmp_path, GOOD))
    assert templates.render("t1", {"street": "兴华路", "community": "明珠雅苑"}) == (
        "明珠雅苑的问题", "你好，我住在兴华路明珠雅苑。\n")


@pytest.mark.parametrize(("source", "variables", "kind", "extra", "expected"), [
    (GOOD.replace("{{ street }}", "{{ street }}{{ road }}"), '"community", "street"',
     "complaint", "", r"t1\.txt\.j2: variable 'road': uses the variable 'road', which "
     r"index\.toml does not declare"),
    (GOOD, '"community", "street", "phone"', "complaint", "",
     "index.toml declares 'phone', which the template never uses"),
    (GOOD.replace("{% block subject %}", "{% block title %}"), '"community", "street"',
     "complaint", "", r"no \{% block subject %\}"),
    (GOOD.replace("{% endblock %}\n{% block body", "{% endblok %}\n{% block body"),
     '"community", "street"', "complaint", "", "t1.txt.j2: line 1: template syntax"),
    (GOOD.replace("{{ street }}", "那边"), '"community"', "complaint", "",
     "must name the place.*expected street or address"),
    (GOOD, '"community", "street"', "complaints", "", "unknown kind"),
    (GOOD, '"community", "street"', "complaint",
     '[[template]]\nid = "t1"\nkind = "complaint"\ntopic = "x"\ntitle = "x"\nfile = "t1.txt.j2"\n'
     'variables = ["community", "street"]\n', "template id 't1' is listed twice"),
])
def test_a_broken_folder_fails_at_load_naming_the_problem(
    tmp_path: Path, source: str, variables: str, kind: str, extra: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        TemplateSet.load(write_set(tmp_path, source, variables, kind, extra))


def test_a_missing_template_file_or_index_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="index is missing"):
        TemplateSet.load(tmp_path)
    write_set(tmp_path, GOOD)
    (tmp_path / "t1.txt.j2").unlink()
    with pytest.raises(ConfigError, match=r"t1\.txt\.j2: template 't1': file not found"):
        TemplateSet.load(tmp_path)


# --- the details -----------------------------------------------------------------------------

def test_details_are_deterministic_and_depend_on_every_input() -> None:
    base = details_for("r1-0001", "广州市", "广州市", SEND, 7)
    assert details_for("r1-0001", "广州市", "广州市", SEND, 7) == base
    for other in (details_for("r1-0002", "广州市", "广州市", SEND, 7),
                  details_for("r1-0001", "深圳市", "深圳市", SEND, 7),
                  details_for("r1-0001", "广州市", "广州市", SEND, 8),
                  details_for("r1-0001", "广州市", "广州市", SEND, 7, attempt=1)):
        assert place_key(other) != place_key(base)


def test_the_observation_lies_shortly_before_the_send_date() -> None:
    seen = set()
    for i in range(300):
        d = details_for(f"r1-{i}", "广州市", "广州市", datetime(2015, 11, 5, 9, 30), 1)
        month, day = d["observed_date"].removesuffix("日").split("月")
        observed = date(2015, int(month), int(day))
        assert 1 <= (SEND - observed).days <= 9
        weekday = "一二三四五六日"[observed.weekday()]
        assert d["observed_weekday"] == f"周{weekday}"
        seen.add(observed)
    assert len(seen) == 9


def test_a_campaign_never_reuses_a_street_and_community_pair() -> None:
    requests = [DetailRequest(f"r1-{i:05d}", f"单位{i % 233}", f"城市{i % 22}", SEND)
                for i in range(5000)]
    details = campaign_details(requests, 2015)
    assert len(details) == 5000
    assert len({place_key(d) for d in details.values()}) == 5000
    # Most probes keep their first draw, so adding a probe disturbs almost nothing.
    kept = sum(details[r.probe_id] == details_for(r.probe_id, r.agency, r.city, SEND, 2015)
               for r in requests)
    assert kept >= 4950
    with pytest.raises(ValueError, match="appears twice"):
        campaign_details(requests[:2] + requests[:1], 2015)


def test_fingerprints_are_the_distinctive_details_the_letter_used(
    templates: TemplateSet,
) -> None:
    variables = variables_for("r1-print")
    _, body = templates.render("odour_factory_1", variables)
    used = fingerprints(variables, body)
    assert used[0] == variables["community"] + variables["building"]
    assert variables["factory"] in used and variables["street"] in used
    assert variables["river"] not in used and variables["observed_date"] not in used
    assert set(used) <= set(fingerprints(variables))


def test_a_masked_phone_is_stable_per_persona() -> None:
    phone = masked_phone("p-lin")
    assert phone == masked_phone("p-lin")
    assert len(phone) == 11 and phone[3:7] == "****" and phone[:3].isdigit()
    assert len({masked_phone(f"p{i}") for i in range(50)}) > 40
