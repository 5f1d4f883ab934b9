"""Text as county offices type it: Chinese keyboards (full-width digits, ＋８６), pasted text with
zero-width characters, and now and then a control character or a NUL that no database should store.

Plain Python, and the one pydantic base every service's HTTP input models use (:class:`InputModel`),
so each of these is handled the same way everywhere: zero-width characters are stripped (a field
left empty by that is then refused as empty), control characters and NUL are refused with the field
named. ID numbers and phones are normalised before they are checked (:func:`normalise_id_number`,
:func:`normalise_phone`): what is stored and hashed is the normalised form, so repeats link.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# A date a clerk may give (a visit, a drive, a deadline, a reception day): within the years the
# bureau's calendar (and a timestamp at +08:00) can hold, so 0001-01-01 is refused, not a 500.
FIRST_DAY, LAST_DAY = date(1949, 10, 1), date(2099, 12, 31)
Day = Annotated[date, Field(ge=FIRST_DAY, le=LAST_DAY)]

# Zero-width space, non-joiner, joiner, word joiner, BOM, soft hyphen: invisible, pasted from chat apps.
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
ALLOWED_CONTROLS = frozenset("\t\n\r")  # a letter's text keeps its line breaks


def strip_invisible(value: str) -> str:
    return value.translate(INVISIBLE)


def control_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text: a control character, NUL or a lone surrogate."""
    for ch in value:
        if ch in ALLOWED_CONTROLS:
            continue
        kind = unicodedata.category(ch)
        if kind == "Cc":
            return f"contains the control character U+{ord(ch):04X}; remove it"
        if kind == "Cs":
            return f"contains an unpaired surrogate U+{ord(ch):04X}; it is not text"
    return None


def clean(value: str) -> str:
    """``value`` without invisible characters; ValueError naming a control character."""
    value = strip_invisible(value)
    problem = control_problem(value)
    if problem:
        raise ValueError(problem)
    return value


_SEPARATORS = re.compile(r"[\s\-()（）.]")


def normalise_id_number(value: str) -> str:
    """A resident ID number as typed on a Chinese keyboard (４１０１…, ｘ, spaces) → 18 ASCII characters."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", strip_invisible(value))).upper()


def normalise_phone(value: str) -> str:
    """+86 138 1234 5678, 138-1234-5678, （0571）87654321, full-width digits → digits only, without
    the country code: 13812345678, 057187654321."""
    digits = _SEPARATORS.sub("", unicodedata.normalize("NFKC", strip_invisible(value)))
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix):
            return digits[len(prefix):]
    if digits.startswith("86") and len(digits) == 13 and digits[2] == "1":  # 8613812345678
        return digits[2:]
    return digits


def _clean_any(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_clean_any(v) for v in value]
    if isinstance(value, dict):
        return {_clean_any(k): _clean_any(v) for k, v in value.items()}
    return value


class InputModel(BaseModel):
    """An HTTP input: no unknown field, surrounding whitespace and invisible characters stripped,
    control characters refused with the field named (every string, also inside lists and dicts)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> Any:
        if _holds_models(cls.model_fields[info.field_name].annotation):
            return value  # a nested input model cleans its own fields, and names them
        return _clean_any(value)


def _holds_models(annotation: Any) -> bool:
    """Whether a field's type is (or contains, as list[...] or X | None) an input model."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_models(a) for a in get_args(annotation))
