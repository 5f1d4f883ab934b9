"""书面告知: the notices a case's steps produce (services/supervision/documents.py) — rendered as text and
DOCX, dated in county time, once per event — first through supervision's use cases on a real
database, then end to end through intake, routing and supervision on a real nats-server."""
from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from docx import Document
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.supervision import documents, tables
from services.supervision.service import Supervision, SupervisionMetrics, apply_events, refresh
from services.units.client import UnitClient
from shared import events as ev
from shared.clock import ManualClock
from shared.consumer import Delivery
from shared.db import UnitOfWork, make_engine, migrate
from shared.directory import load_directory
from shared.policy import CHINA_TZ, load_policy
from shared.settings import REPO_ROOT, Settings
from tests.helpers import case_body, wait_until

# SQLite only (tests/conftest.py): the notices' wording and dates; the timelines they come from run on
# PostgreSQL in tests/test_supervision.py.
pytestmark = pytest.mark.one_database

CONFIG = REPO_ROOT / "deploy" / "config"
CASE = "QS-2026-000042"
SYS = ev.Actor(kind="service", id="test")
UNIT = ev.Actor(kind="unit", id="forestry")
PHONE, MASKED_ID = "13812345678", "331082********0019"


def county(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    """A moment of 2026 in county time (UTC+8), as UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=timezone(timedelta(hours=8))).astimezone(timezone.utc)


def brief() -> ev.CaseBrief:
    return ev.CaseBrief(title="林木采伐许可", content="c", channel="walk_in", received_at=county(5, 11),
                        township="xishan", resident_name="李秀英")


def received(case_id: str = CASE) -> list[ev.Event]:
    """Received Monday 2026-05-11, assigned to forestry and signed for the next day."""
    return [
        ev.CaseReceived(case_id=case_id, occurred_at=county(5, 11), actor=SYS, channel="walk_in", title="林木采伐许可",
                        content="申请采伐自留山林木", township="xishan",
                        resident=ev.ResidentRef(name="李秀英", masked_id=MASKED_ID, id_hash="h" * 64, phone=PHONE)),
        ev.CaseAssigned(case_id=case_id, occurred_at=county(5, 11, 10), actor=SYS, unit="forestry", role="lead",
                        case=brief()),
        ev.UnitSigned(case_id=case_id, occurred_at=county(5, 12), actor=UNIT, unit="forestry"),
    ]


# Accepted at 00:30 on Monday 2026-05-18 in the county: still Sunday the 17th in UTC.
ACCEPTED = ev.AcceptanceDecided(case_id=CASE, occurred_at=county(5, 18, 0, 30), actor=UNIT, unit="forestry",
                                decision="accepted")
EXTENSION = [
    ev.ExtensionRequested(case_id=CASE, occurred_at=county(6, 1), actor=UNIT, unit="forestry", days=30,
                          reason="需委托林地权属鉴定"),
    ev.ExtensionDecided(case_id=CASE, occurred_at=county(6, 2), actor=ev.Actor(kind="unit", id="head01"),
                        unit="forestry", approved=True, days=30, reason="同意", approved_by="head01"),
]
OPINION = ev.CaseReplied(case_id=CASE, occurred_at=county(8, 10), actor=UNIT, unit="forestry",
                         result="not_supported", text="经现场核查，该林地属生态公益林，依法不予核发采伐许可证。")
REVIEW = [
    ev.ReviewRequested(case_id=CASE, occurred_at=county(8, 20), actor=SYS, level="review", reason="不服"),
    ev.CaseAssigned(case_id=CASE, occurred_at=county(8, 20, 10), actor=SYS, unit="county_gov", role="reviewer",
                    review_level="review", case=brief()),
    ev.CaseReplied(case_id=CASE, occurred_at=county(9, 10), actor=ev.Actor(kind="unit", id="county_gov"),
                   unit="county_gov", result="not_supported", text="原处理意见事实清楚，依据充分。",
                   review_outcome="upheld"),
]
RE_REVIEW = [
    ev.ReviewRequested(case_id=CASE, occurred_at=county(9, 15), actor=SYS, level="re_review", reason="仍不服"),
    ev.CaseAssigned(case_id=CASE, occurred_at=county(9, 15, 10), actor=SYS, unit="city_gov", role="reviewer",
                    review_level="re_review", case=brief()),
    ev.CaseReplied(case_id=CASE, occurred_at=county(10, 12), actor=ev.Actor(kind="unit", id="city_gov"),
                   unit="city_gov", result="partly_resolved", text="准予采伐枯死木，其余维持。", review_outcome="changed"),
]


@pytest.fixture
def sup(database: Callable[[str], str]) -> Iterator[Supervision]:
    url = database("supervision_documents")
    migrate("supervision", url)
    engine = make_engine(url)
    yield Supervision(uow=UnitOfWork(engine), directory=load_directory(CONFIG), policy=load_policy(CONFIG),
                      clock=ManualClock(county(5, 11)), metrics=SupervisionMetrics(), settings=Settings())
    engine.dispose()


def deliver(sup: Supervision, *batches: list[ev.Event]) -> None:
    for batch in batches:
        with sup.uow.begin() as conn:
            apply_events(sup, conn, [Delivery(e, e.subject, e.occurred_at) for e in batch])


def notices(sup: Supervision, case_id: str = CASE) -> list[dict]:
    with sup.uow.engine.connect() as conn:
        return documents.for_case(conn, case_id)


def fetch(sup: Supervision, doc_id: str, fmt: str, case_id: str = CASE) -> bytes | str | None:
    with sup.uow.engine.connect() as conn:
        return documents.document(conn, case_id, doc_id, fmt)


def docx_text(data: bytes) -> str:
    return "\n".join(p.text for p in Document(io.BytesIO(data)).paragraphs)


def the(sup: Supervision, kind: str) -> tuple[dict, str]:
    """The case's one notice of ``kind``, and the text of its DOCX (which says what the text says)."""
    [notice] = [n for n in notices(sup) if n["kind"] == kind]
    word = docx_text(fetch(sup, notice["doc_id"], "docx"))
    assert notice["text"] == fetch(sup, notice["doc_id"], "txt")
    assert [line for line in notice["text"].splitlines() if line] == [line for line in word.splitlines() if line]
    assert PHONE not in notice["text"] + word and MASKED_ID not in notice["text"] + word  # name only
    return notice, word


def test_an_acceptance_notice_cites_article_23_and_gives_the_opinion_due_day_in_county_time(sup: Supervision) -> None:
    deliver(sup, received(), [ACCEPTED])
    notice, word = the(sup, "accept_notice")
    assert notice["title"] == "受理告知书" and notice["unit"] == "forestry"
    assert notice["doc_id"] == f"accept_notice-{ACCEPTED.event_id}"
    for text in ("受理告知书", f"信访件编号：{CASE}", "李秀英：", "第二十三条", "予以受理", "县林业局"):
        assert text in word
    # Dated the day it was decided in the county (Monday the 18th; in UTC still the 17th).
    assert word.splitlines()[-1] == "2026年05月18日"
    # 60 days from acceptance (Art. 34): 2026-07-17, a Friday. The due date is the END of that day
    # (2026-07-18 00:00 county time): the resident reads the 17th, not the 18th.
    assert "于2026年07月17日前向您出具书面处理意见" in word and "07月18日" not in word
    assert "于2026年05月11日就“林木采伐许可”反映的事项" in word


@pytest.mark.parametrize("path, words", [
    ("litigation", "请您依法向人民法院提起诉讼。"),
    ("arbitration", "请您依法申请仲裁。"),
    ("administrative_review", "请您依法申请行政复议。"),
    ("other_statutory", "请您依法通过其他法定途径解决。"),
    (None, None),
])
def test_a_not_accepted_notice_gives_the_reason_and_the_legal_path(sup: Supervision, path: str | None,
                                                                   words: str | None) -> None:
    deliver(sup, received(), [ev.AcceptanceDecided(case_id=CASE, occurred_at=county(5, 15), actor=UNIT,
                                                   unit="forestry", decision="not_accepted",
                                                   reason="该事项已由人民法院受理", legal_path=path)])
    notice, word = the(sup, "not_accept_notice")
    assert notice["title"] == "不予受理告知书"
    assert "第二十三条" in word and "决定不予受理" in word and "不予受理的理由：该事项已由人民法院受理" in word
    if words:
        assert words in word
    else:
        assert "法定途径" not in word
    assert "出具书面处理意见" not in word  # no opinion is due


def test_a_forwarded_decision_and_a_refused_extension_write_nothing(sup: Supervision) -> None:
    deliver(sup, received(), [ev.AcceptanceDecided(case_id=CASE, occurred_at=county(5, 13), actor=UNIT,
                                                   unit="forestry", decision="forwarded", reason="属自然资源局职责")])
    assert notices(sup) == []  # an objection goes to the bureau, not to the resident
    deliver(sup, [ev.ObjectionDecided(case_id=CASE, occurred_at=county(5, 14), actor=SYS, unit="forestry",
                                      approved=False, reason="属林业局职责"), ACCEPTED, EXTENSION[0]],
            [EXTENSION[1].model_copy(update={"approved": False, "days": 0, "event_id": "refused-1"})])
    assert [n["kind"] for n in notices(sup)] == ["accept_notice"]


def test_an_extension_notice_names_the_head_the_days_why_and_the_new_day(sup: Supervision) -> None:
    deliver(sup, received(), [ACCEPTED], EXTENSION)
    notice, word = the(sup, "extension_notice")
    assert notice["title"] == "延期告知书"
    assert "因需委托林地权属鉴定" in word and "本机关负责人批准" in word and "第三十四条" in word
    assert "延长30日" in word
    # 2026-07-17 + 30 days is Sunday 2026-08-16: the last day rolls to Monday 2026-08-17.
    assert "于2026年08月17日前向您出具书面处理意见" in word
    assert word.splitlines()[-1] == "2026年06月02日"
    # The acceptance notice still says what was true when it was issued.
    assert "2026年07月17日" in the(sup, "accept_notice")[1]


def test_each_opinion_names_where_to_ask_next_and_the_last_is_final(sup: Supervision) -> None:
    deliver(sup, received(), [ACCEPTED], EXTENSION, [OPINION], REVIEW, RE_REVIEW)
    assert [n["kind"] for n in notices(sup)] == ["accept_notice", "extension_notice", "opinion", "review_opinion",
                                                  "re_review_opinion"]
    notice, word = the(sup, "opinion")
    assert notice["title"] == "处理意见书" and notice["unit"] == "forestry"
    for text in ("第三十四条", "办理结果：不予支持", OPINION.text,
                 "自收到本意见书之日起30日内，向青山县人民政府请求复查", "第三十五条", "县林业局"):
        assert text in word
    notice, word = the(sup, "review_opinion")
    assert notice["title"] == "复查意见书" and notice["unit"] == "county_gov"
    for text in ("第三十五条", "维持原处理意见", "原处理意见事实清楚", "向市人民政府请求复核", "第三十六条", "青山县人民政府"):
        assert text in word
    notice, word = the(sup, "re_review_opinion")
    assert notice["title"] == "复核意见书" and notice["unit"] == "city_gov"
    for text in ("第三十六条", "经复核，变更复查意见", "青山县人民政府复查意见的复核请求", "准予采伐枯死木", "最终意见", "同一事实和理由", "不再受理", "市人民政府"):
        assert text in word
    assert "请求复" not in word.replace("复核请求", "")  # nowhere left to ask


def test_a_redelivery_or_a_refold_issues_nothing_twice(sup: Supervision) -> None:
    everything = [*received(), ACCEPTED, *EXTENSION, OPINION]
    deliver(sup, everything[:4], everything[4:])
    before = notices(sup)
    deliver(sup, everything, [ACCEPTED], everything[::-1])  # redelivered, in any order
    with sup.uow.begin() as conn:
        refresh(sup, conn, CASE)
        assert conn.execute(select(func.count()).select_from(tables.documents)).scalar_one() == 3
    assert notices(sup) == before


def test_events_before_the_receipt_are_written_once_it_arrives(sup: Supervision) -> None:
    receipt, *rest = received()
    deliver(sup, [*rest, ACCEPTED])  # the case is not received yet: nothing applies, nothing is written
    assert notices(sup) == []
    deliver(sup, [receipt])
    assert [n["kind"] for n in notices(sup)] == ["accept_notice"]
    assert "李秀英：" in notices(sup)[0]["text"]


def test_a_case_without_the_document_answers_none(sup: Supervision) -> None:
    deliver(sup, received(), [ACCEPTED])
    [notice] = notices(sup)
    assert fetch(sup, notice["doc_id"], "txt", case_id="QS-2026-000043") is None  # another case's id
    assert fetch(sup, "accept_notice-nope", "docx") is None
    assert notices(sup, "QS-2026-000043") == []
    with pytest.raises(ValueError):
        fetch(sup, notice["doc_id"], "pdf")


# --- end to end: intake → routing → the unit's events → supervision's documents and progress lookup ---

def submit(intake: TestClient) -> dict:
    answer = intake.post("/api/v1/cases", json=case_body(category="logging_permit"))  # → forestry
    assert answer.status_code == 201, answer.text
    return answer.json()


def as_unit(settings: Settings, code: str, action: str, *args, **kw) -> ev.Event:  # noqa: ANN002, ANN003
    """What forestry's own system does: a client action, or ``publish`` a department event as it
    publishes one (its client asks routing first whether the case is the unit's)."""
    async def go() -> ev.Event:
        async with UnitClient(settings.nats_url, code) as client:
            return await (client._send(*args) if action == "publish" else getattr(client, action)(*args, **kw))
    return asyncio.run(go())


def listed(supervision: TestClient, case_id: str, kind: str) -> dict | None:
    answer = supervision.get(f"/api/v1/cases/{case_id}/documents")
    assert answer.status_code == 200, answer.text
    return next((d for d in answer.json() if d["kind"] == kind), None)


def wait_document(supervision: TestClient, case_id: str, kind: str) -> dict:
    wait_until(lambda: listed(supervision, case_id, kind) is not None, what=f"the {kind} of {case_id}")
    return listed(supervision, case_id, kind)


def reply_due_day(supervision: TestClient, case_id: str) -> str:
    """The case view's reply due date as the resident reads it: the day before its midnight, in the county."""
    due = next(d for d in supervision.get(f"/api/v1/cases/{case_id}").json()["dues"] if d["kind"] == "reply")
    return (datetime.fromisoformat(due["due_at"]) - timedelta(seconds=1)).astimezone(CHINA_TZ).strftime("%Y年%m月%d日")


def test_the_notices_reach_the_case_view_and_the_residents_lookup_through_the_real_services(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings,
        token: Callable[..., dict[str, str]]) -> None:
    case = submit(intake)
    number, code = case["case_number"], case["query_code"]
    wait_until(lambda: supervision.get(f"/api/v1/cases/{number}").json().get("state") == "assigned",
               what="the assignment")
    as_unit(settings, "forestry", "sign", number)
    as_unit(settings, "forestry", "publish", ev.AcceptanceDecided(
        case_id=number, occurred_at=datetime.now(timezone.utc), actor=UNIT, unit="forestry", decision="accepted"))

    accepted = wait_document(supervision, number, "accept_notice")
    assert accepted["title"] == "受理告知书" and accepted["unit"] == "forestry"
    assert "王建国：" in accepted["text"] and "第二十三条" in accepted["text"]
    assert f"于{reply_due_day(supervision, number)}前" in accepted["text"]
    progress = supervision.post("/api/v1/progress", json={"case_id": number, "query_code": code})
    assert progress.status_code == 200, progress.text
    [shown] = progress.json()["documents"]
    assert (shown["doc_id"], shown["title"], shown["text"]) == (accepted["doc_id"], "受理告知书", accepted["text"])
    assert "unit" not in shown  # the resident reads the issuing unit's name in the text, not its code
    download = supervision.post(f"/api/v1/progress/documents/{accepted['doc_id']}.docx",
                                json={"case_id": number, "query_code": code})
    assert download.status_code == 200, download.text
    word = docx_text(download.content)
    assert "受理告知书" in word and "县林业局" in word and "13812345678" not in word
    assert supervision.get(f"/api/v1/cases/{number}/documents/{accepted['doc_id']}.txt").text == accepted["text"]
    assert docx_text(supervision.get(f"/api/v1/cases/{number}/documents/{accepted['doc_id']}.docx").content) == word
    wrong = supervision.post(f"/api/v1/progress/documents/{accepted['doc_id']}.docx",
                             json={"case_id": number, "query_code": "WRONG123"})
    assert wrong.status_code == 404 and b"PK" not in wrong.content[:2]

    as_unit(settings, "forestry", "request_extension", number, days=20, reason="需委托林地权属鉴定")
    wait_until(lambda: supervision.get(f"/api/v1/cases/{number}").json()["extension"] == "requested",
               what="the extension request")
    head = token("unit_head", unit="forestry")
    decided = supervision.post(f"/api/v1/cases/{number}/extension", headers=head,
                               json={"approved": True, "days": 20, "reason": "同意延期"})
    assert decided.status_code == 200, decided.text
    extended = wait_document(supervision, number, "extension_notice")
    assert "因需委托林地权属鉴定" in extended["text"] and "延长20日" in extended["text"]
    assert f"于{reply_due_day(supervision, number)}前" in extended["text"]  # the new date
    assert reply_due_day(supervision, number) not in accepted["text"]

    as_unit(settings, "forestry", "reply", number, result="resolved", text="已核发采伐许可证")
    opinion = wait_document(supervision, number, "opinion")
    assert opinion["title"] == "处理意见书"
    assert "已核发采伐许可证" in opinion["text"] and "向青山县人民政府请求复查" in opinion["text"]
    progress = supervision.post("/api/v1/progress", json={"case_id": number, "query_code": code}).json()
    assert [d["kind"] for d in progress["documents"]] == ["accept_notice", "extension_notice", "opinion"]
    assert all("13812345678" not in d["text"] for d in progress["documents"])


def test_a_unit_that_never_held_the_case_sees_none_of_its_notices(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings,
        token: Callable[..., dict[str, str]]) -> None:
    number = submit(intake)["case_number"]
    wait_until(lambda: supervision.get(f"/api/v1/cases/{number}").json().get("state") == "assigned",
               what="the assignment")
    as_unit(settings, "forestry", "sign", number)
    as_unit(settings, "forestry", "publish", ev.AcceptanceDecided(
        case_id=number, occurred_at=datetime.now(timezone.utc), actor=UNIT, unit="forestry",
        decision="not_accepted", reason="该事项已进入诉讼程序", legal_path="litigation"))
    notice = wait_document(supervision, number, "not_accept_notice")
    assert "请您依法向人民法院提起诉讼。" in notice["text"]
    forestry, health = token("unit", unit="forestry"), token("unit", unit="health")
    assert supervision.get(f"/api/v1/cases/{number}/documents", headers=forestry).status_code == 200
    assert supervision.get(f"/api/v1/cases/{number}/documents", headers=health).status_code == 404
    txt = f"/api/v1/cases/{number}/documents/{notice['doc_id']}.txt"
    assert supervision.get(txt, headers=health).status_code == 404
    assert supervision.get(f"/api/v1/cases/{number}/documents/{notice['doc_id']}.pdf").status_code == 422


def test_a_decision_refused_at_first_and_applied_once_its_cause_arrives_is_written(sup: Supervision) -> None:
    receipt, assigned, signed = received()
    deliver(sup, [receipt, assigned], [ACCEPTED])  # before the sign-for: refused ("sign for the case first")
    assert notices(sup) == []
    deliver(sup, [signed])  # the sign-for (05-12) came first after all: the acceptance (05-18) applies now
    assert [n["kind"] for n in notices(sup)] == ["accept_notice"]
