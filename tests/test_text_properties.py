"""Property tests (hypothesis) of what a Chinese keyboard and a county office's files do to input: any
rendering of an ID number or a phone normalises to the one form; any control character is refused
with its field named and any other text is never an error of any other kind; any CSV in the
encodings Excel writes reads back as written."""
from __future__ import annotations

import codecs
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake import domain, importer
from services.intake.schemas import CaseSubmission, ResidentIn
from shared.errors import InvalidInput
from shared.text import INVISIBLE, normalise_id_number, normalise_phone
from tests.helpers import resident_id

FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789X+-()"}
ZERO_WIDTH = [chr(c) for c in INVISIBLE]


@st.composite
def typed(draw: st.DrawFn, text: str) -> str:
    """``text`` as someone might type or paste it: some characters full-width, spaces and zero-width
    characters in between, an x in lower case."""
    out = []
    for ch in text:
        if ch in FULL_WIDTH and draw(st.booleans()):
            ch = FULL_WIDTH[ch]
        elif ch == "X" and draw(st.booleans()):
            ch = "x"
        out.append(ch)
        out.append(draw(st.sampled_from(["", "", "", " ", "-", *ZERO_WIDTH])))
    return "".join(out)


ids = st.integers(1, 9999).map(resident_id)
mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)


@given(st.data(), ids)
def test_any_typing_of_an_id_number_normalises_to_the_number(data: st.DataObject, number: str) -> None:
    rendering = data.draw(typed(number))
    assert normalise_id_number(rendering) == number
    assert ResidentIn(name="王建国", id_number=rendering).id_number == number


@given(st.data(), mobiles, st.sampled_from(["", "+86", "+86 ", "0086", "86"]))
def test_any_typing_of_a_mobile_number_normalises_to_its_11_digits(data: st.DataObject, mobile: str,
                                                                    prefix: str) -> None:
    rendering = data.draw(typed(prefix + mobile))
    assert normalise_phone(rendering) == mobile
    assert ResidentIn(name="王建国", phone=rendering).phone == mobile


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40),
       st.sampled_from([chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127)]),
       st.integers(0, 40))
def test_a_control_character_anywhere_is_refused_with_its_field_named(text: str, control: str, at: int) -> None:
    bad = text[:at] + control + text[at:]
    with pytest.raises(ValidationError) as refused:
        ResidentIn(name="王建国", address=bad)
    assert [e["loc"] for e in refused.value.errors()] == [("address",)]
    assert f"U+{ord(control):04X}" in str(refused.value)


@given(st.lists(st.sampled_from(ZERO_WIDTH), min_size=1, max_size=5).map("".join))
def test_a_name_of_zero_width_characters_only_is_refused_as_empty(invisible: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ResidentIn(name=invisible)
    assert refused.value.errors()[0]["loc"] == ("name",)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["name", "id_number", "phone", "address"]), st.text(max_size=30)))
def test_any_resident_text_is_accepted_or_refused_field_by_field_never_otherwise(fields: dict) -> None:
    try:
        resident = ResidentIn.model_validate({"name": "王建国", **fields})
    except ValidationError as exc:
        assert all(e["loc"] and e["loc"][0] in {"name", *fields} for e in exc.errors())
        return
    if resident.id_number:
        assert domain.resident_id_problem(resident.id_number) is None
    if resident.phone:
        assert domain.phone_problem(resident.phone) is None


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_any_case_text_is_either_a_submission_or_field_errors(text: str) -> None:
    body = {"channel": "walk_in", "resident": {"name": "王建国"}, "title": text, "content": text,
            "township": "chengguan"}
    try:
        sub = CaseSubmission.model_validate(body)
    except ValidationError as exc:
        assert {e["loc"][0] for e in exc.errors()} <= {"title", "content"}
        return
    assert not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in sub.title + sub.content)


cells = st.text(alphabet=st.characters(whitelist_categories=("Lo", "Nd", "Lu", "Ll"), max_codepoint=0x9FFF)
                .filter(lambda c: c.encode("gb18030", errors="ignore") != b""), min_size=1, max_size=8)


@given(st.lists(st.tuples(cells, cells, cells, cells), min_size=1, max_size=20),
       st.sampled_from(["utf-8", "utf-8-sig", "gb18030", "utf-16"]))
def test_a_csv_in_any_encoding_excel_writes_reads_back_as_written(table: list[tuple], encoding: str) -> None:
    sep = "\t" if encoding == "utf-16" else ","
    text = "\r\n".join(sep.join(r) for r in [("姓名", "乡镇", "事由", "基本情况"), *table]) + "\r\n"
    data = (codecs.BOM_UTF16_LE + text.encode("utf-16-le")) if encoding == "utf-16" else text.encode(encoding)
    try:
        sheet = importer.read_file(data, "排查.csv")
    except InvalidInput as exc:  # a GB18030 file whose bytes are also UTF-8 is read as UTF-8 (ASCII only)
        raise AssertionError(exc.errors) from None
    assert [tuple(v.values()) for _, v in sheet.rows] == [tuple(c.strip() for c in r) for r in table
                                                          if any(c.strip() for c in r)]
