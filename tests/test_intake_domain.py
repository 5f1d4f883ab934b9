"""Intake's plain rules: resident IDs (GB 11643), phones, masking, case numbers, repeats."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.intake import domain
from tests.helpers import resident_id


def test_a_valid_resident_id_passes() -> None:
    assert domain.resident_id_problem("11010519491231002X") is None
    assert domain.resident_id_problem(resident_id(7)) is None


@pytest.mark.parametrize("value, problem", [
    ("110105194912310021", "check character"),
    ("11010519491331002X", "not a real date"),
    ("110105189912310021", "out of range"),
    ("11010519491231002", "18 in all"),
    ("1101051949123100AX", "18 in all"),
])
def test_a_bad_resident_id_says_what_is_wrong(value: str, problem: str) -> None:
    assert problem in domain.resident_id_problem(value)


def test_masking_hides_the_date_of_birth() -> None:
    assert domain.mask_resident_id("11010519491231002X") == "110105********002X"


def test_the_resident_key_is_keyed() -> None:
    a = domain.resident_key("k1", "11010519491231002X")
    assert a == domain.resident_key("k1", "11010519491231002X")
    assert a != domain.resident_key("k2", "11010519491231002X")
    assert "11010519491231002X" not in a


@pytest.mark.parametrize("phone, ok", [("13812345678", True), ("0571-87654321", True), ("057187654321", True),
                                       ("12812345678", False), ("1381234567", False), ("phone", False)])
def test_phones(phone: str, ok: bool) -> None:
    assert (domain.phone_problem(phone) is None) is ok


def test_case_numbers_follow_the_countys_calendar_year() -> None:
    new_years_eve_utc = datetime(2026, 12, 31, 17, 0, tzinfo=timezone.utc)  # 01:00 on 1 Jan in China
    assert domain.local_year(new_years_eve_utc) == 2027
    assert domain.case_number("QS", 2026, 123) == "QS-2026-000123"


def test_query_codes_avoid_confusable_characters() -> None:
    codes = {domain.new_query_code() for _ in range(200)}
    assert len(codes) == 200
    assert not any(c in code for code in codes for c in "01OI")


def test_a_similar_title_of_the_same_resident_is_a_repeat_of_the_latest_match() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    earlier = [domain.EarlierCase("QS-2026-000001", "邻居违规搭建占用公共通道", t0),
               domain.EarlierCase("QS-2026-000005", "邻居违规搭建占用通道问题", t0 + timedelta(days=3)),
               domain.EarlierCase("QS-2026-000009", "孩子入学难", t0 + timedelta(days=5))]
    assert domain.find_repeat("邻居违规搭建占用公共通道", earlier, 0.5) == "QS-2026-000005"
    assert domain.find_repeat("拖欠农民工工资", earlier, 0.5) is None


def test_five_people_make_a_collective_petition() -> None:
    assert not domain.is_collective(4)
    assert domain.is_collective(5)
