"""What happens in a simulated county-year, decided up front from the seed (plain Python).

Volumes follow the seed report's county (DESIGN §1): ≈76 reception-room cases, 38 online, 453
delegated, 268 screened disputes — 46 of them in four special-period drives, each made leader cases
and handed out by its own numbered 交办 notice —, night visits, letters, calls and cases handed down by
the city; busier before the Spring Festival and National Day. The report is written at the year's end,
so what was filed in its last weeks is still being handled. Units differ: most sign, decide on acceptance and
give their opinion on time, some are slow, some object to cases (异议), some ask for extensions, decided
by their own head; residents are mostly satisfied, and a few ask for a review (复查) and a re-review
(复核). The rates of each step are in :data:`RATES`; what a unit does with a case, and what its
resident answers, is drawn while the year is played (services/simulator/runner.py), from the seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from shared.directory import Directory

YEARLY = {"walk_in": 76, "online": 38, "delegated": 453, "letter": 40, "phone": 30, "referral": 12}
SERVICE_CATEGORY = {"forestry_logging_permit": "logging_permit", "family_planning_registration": "family_planning",
                    "business_license": "consumer_rights", "tax_certificate": "taxation",
                    "social_security_card": "social_insurance", "subsistence_application": "social_assistance",
                    "rural_housing_permit": "land_resources", "residence_certificate": "public_order",
                    "pension_certification": "social_insurance"}
SURNAMES, GIVEN = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗", "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

# The rates of the procedure's steps (信访工作条例 2022): each a choice among outcomes, by weight.
RATES: dict[str, dict[str, float]] = {
    # 受理决定 after the sign-for (Art. 23): a few matters belong to a statutory path (不予受理).
    "acceptance": {"not_accepted": 0.03, "accepted": 0.97},
    # The supervision office on a unit's objection (异议): mostly upheld, the case routed again.
    "objection": {"objection_approved": 0.8, "objection_rejected": 0.2},
    # The unit's head (本机关负责人) on its extension request (Art. 34).
    "extension": {"extension_approved": 0.9, "extension_refused": 0.1},
    # The resident on the lead unit's handling opinion (处理意见书).
    "opinion": {"review": 0.05, "no_review": 0.03, "silent": 0.05, "satisfied": 0.87},
    # ... on the review's opinion (复查意见).
    "review_opinion": {"re_review": 0.2, "no_review": 0.15, "silent": 0.1, "satisfied": 0.55},
    # ... after the re-review's opinion (复核意见, final): a few file the same matter again (不再受理).
    "re_review_opinion": {"refile": 0.25, "rests": 0.75},
    # A reviewing body's outcome (复查/复核意见).
    "review_outcome": {"upheld": 0.8, "changed": 0.15, "revoked": 0.05},
}
NOT_ACCEPTED = (  # 不予受理: the reason, and the statutory path the matter belongs to (导入法定途径)
    ("该事项属于劳动争议，应当依法申请劳动仲裁", "arbitration"),
    ("该事项已经或者依法应当通过诉讼途径解决", "litigation"),
    ("该事项属于行政复议受理范围", "administrative_review"),
    ("该事项应当通过其他法定途径解决", "other_statutory"),
)
REVIEW_DAYS = (5, 20)  # a reviewing body answers a review within its 30 days (Art. 35, 36)
# How long a channel's matters take, against the unit's usual pace: online petitions are mostly
# questions answered in days (the source document closes 97% of them by the year's end; the reception
# room's disputes, at the units' usual pace, 91%).
CHANNEL_PACE = {"online": 0.25}
# Screening drives: (kind, name, opens (month, day), disputes; for a special-period drive, the period its
# 交办 notice names). 268 disputes, the 46 of the four special-period drives made leader cases.
DRIVES = [("quarterly", "第一季度矛盾纠纷排查", (1, 5), 56, None), ("special", "春节前矛盾纠纷专项排查", (2, 1), 12, "春节"),
          ("special", "全国两会前矛盾纠纷专项排查", (2, 20), 10, "全国两会"), ("quarterly", "第二季度矛盾纠纷排查", (4, 5), 56, None),
          ("special", "七一前矛盾纠纷专项排查", (6, 10), 10, "七一"), ("quarterly", "第三季度矛盾纠纷排查", (7, 5), 55, None),
          ("special", "国庆节前矛盾纠纷专项排查", (9, 15), 14, "国庆"), ("quarterly", "第四季度矛盾纠纷排查", (10, 5), 55, None)]


def resident_id(rnd: random.Random) -> str:
    body = f"331082{rnd.randrange(1940, 2005)}{rnd.randrange(1, 13):02d}{rnd.randrange(1, 28):02d}{rnd.randrange(1000):03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _W)) % 11]


@dataclass
class Drive:
    opens: date
    closes: date
    kind: str
    name: str
    disputes: int
    rows: list[dict] = field(default_factory=list)
    period: str | None = None  # a special-period drive: the period its 交办 notice names (国庆)
    drive_id: str | None = None  # as intake opened it
    case_ids: list[str] = field(default_factory=list)  # as intake numbered its rows


@dataclass
class Visit:
    day: date
    township: str
    village: str
    households: int
    problems: list[dict]  # each becomes a case
    kind: str = "station_staff"  # township_leader (乡镇领导) or station_staff (驻站人员)
    fmt: str = "one_to_one"  # one_to_one (一对一) or group (多户座谈)
    solved_on_spot: int = 0
    suggestions: int = 0
    case_ids: list[str] = field(default_factory=list)  # the cases intake made of its problems


@dataclass
class UnitHabit:
    sign_days: tuple[int, int]  # receipt → 签收
    accept_days: tuple[int, int]  # 签收 → 受理决定
    reply_days: tuple[int, int]  # 受理 → 处理意见书
    objection_rate: float  # 异议: a case that is not its own, objected to within 1-3 days of receipt
    extension_rate: float  # 延期申请
    head_api_share: float  # how often its head decides an extension through the bureau's API (else its own system)


@dataclass
class Year:
    year: int
    filings: dict[date, list[dict]] = field(default_factory=dict)  # day → /cases bodies
    drives: list[Drive] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    habits: dict[str, UnitHabit] = field(default_factory=dict)


def plan_year(directory: Directory, seed: int, scale: float = 1.0, year: int = 2026, days: int = 365) -> Year:
    rnd = random.Random(seed)
    first, last = date(year, 1, 1), date(year, 1, 1) + timedelta(days=days - 1)
    plan = Year(year)
    townships = sorted(directory.townships)
    categories = [c for c in sorted(directory.categories) if c != "other"]
    for code in sorted(directory.units):
        slow = rnd.random() < 0.15
        plan.habits[code] = UnitHabit(sign_days=(2, 6) if slow else (0, 2), accept_days=(2, 6) if slow else (1, 3),
                                      reply_days=(40, 75) if slow else (5, 40),
                                      objection_rate=0.08 if rnd.random() < 0.2 else 0.01,
                                      extension_rate=0.15 if slow else 0.03,
                                      head_api_share=0.8 if rnd.random() < 0.5 else 0.2)
    people: list[tuple[str, str]] = []

    def season(day: date) -> float:  # before the Spring Festival and National Day, more
        return 1.8 if (day.month == 2 and day.day < 17) or (day.month == 9 and day.day >= 15) else 1.0

    span = [first + timedelta(days=i) for i in range(days)]
    weights = [season(d) * (0.3 if d.weekday() >= 5 else 1.0) for d in span]

    def resident(fresh: bool = False) -> dict:
        if people and not fresh and rnd.random() < 0.03:
            name, idn = rnd.choice(people)  # a repeat petitioner
        else:
            name, idn = rnd.choice(SURNAMES) + "".join(rnd.choice(GIVEN) for _ in range(2)), resident_id(rnd)
            people.append((name, idn))
        return {"name": name, "id_number": idn, "phone": f"13{rnd.randrange(10**8, 10**9)}"}

    # Agents at the township centres, which offer every service, are busier than a village's.
    agents = sorted(directory.agents)
    busy = [len(directory.agency_of(a).service_types) ** 3 for a in agents]

    def case(channel: str, plain: bool = False) -> dict:
        """A case as filed; ``plain``: a fresh resident and none of the marks of an important case."""
        township = rnd.choice(townships)
        village = rnd.choice(directory.townships[township].villages).code
        body = {"channel": channel, "resident": resident(plain), "township": township, "village": village}
        if channel == "delegated":
            agent = rnd.choices(agents, busy)[0]
            service = rnd.choice(directory.agency_of(agent).service_types)
            category = SERVICE_CATEGORY.get(service, "other")
            body["delegation"] = {"agent_id": agent, "service_type": service}
        else:
            category = rnd.choice(categories)
        if channel == "referral":
            body["referral"] = {"doc_no": f"市信转〔{year}〕{rnd.randrange(1, 300)}号", "from_office": "市信访局"}
        keywords = directory.categories[category].keywords or ["问题"]
        body["title"] = f"反映{rnd.choice(keywords)}{directory.categories[category].name}问题"
        body["content"] = f"群众反映{rnd.choice(keywords)}方面的问题，请求协调解决。"
        # Some cases come without a category: routing classifies them from the words above.
        body["category"] = None if channel in ("letter", "phone") and rnd.random() < 0.4 else category
        if rnd.random() < 0.05 and not plain:
            body["people_count"] = rnd.randrange(5, 31)
        body["escalated"], body["backlog"] = (False, False) if plain else (rnd.random() < 0.03, rnd.random() < 0.02)
        return body

    for channel, per_year in YEARLY.items():
        for _ in range(round(per_year * scale * days / 365)):
            day = rnd.choices(span, weights)[0]
            plan.filings.setdefault(day, []).append(case(channel))
    for kind, name, (month, day_of), n, period in DRIVES:
        opens = date(year, month, day_of)
        if opens <= last:
            d = Drive(opens, opens + timedelta(days=14), kind, f"{year}年{name}", round(n * scale), period=period)
            plan.drives.append(d)
            plan.filings.setdefault(opens, [])
    for d in plan.drives:  # a quarterly drive's disputes are ordinary ones; a special period's, important
        d.rows = [case("screening", plain=d.kind != "special") for _ in range(d.disputes)]
    # 驻村夜访 as the seed report's county did them: township leaders ≈120 户次 with 60+ problems solved,
    # station staff ≈850 户次 with 400+, 100+ suggestions; most problems solved on the spot, a few become cases.
    day = first + timedelta(days=3)
    while day <= last:
        township = rnd.choice(townships)
        leader = rnd.random() < 0.2
        problems = [dict(case("night_visit"), category=None) for _ in range(rnd.randrange(0, 2))]
        for p in problems:
            for key in ("channel", "township", "village", "escalated", "backlog", "delegation", "referral"):
                p.pop(key, None)
        households = rnd.randrange(3, 8) if leader else rnd.randrange(6, 13)
        plan.visits.append(Visit(day, township, rnd.choice(directory.townships[township].villages).code,
                                 households, problems, "township_leader" if leader else "station_staff",
                                 "group" if households >= 8 else "one_to_one",
                                 rnd.randrange(1, 5) if leader else rnd.randrange(2, 7), rnd.randrange(0, 3)))
        day += timedelta(days=max(1, round(3 / max(scale, 0.1))))
    return plan
