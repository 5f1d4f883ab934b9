"""Intake's rules, in plain Python: resident IDs, phones, case numbers, flags, repeat detection,
and the checks of a submission against its channel and the county's directory."""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from shared.directory import Directory
from shared.errors import Conflict, FieldError
from shared.keys import Keys
from shared.privacy import keyed_hash

CHINA_TZ = timezone(timedelta(hours=8))  # case numbers follow the county's calendar year
MAX_TITLE = 100
MAX_CONTENT = 5000
COLLECTIVE_MIN_PEOPLE = 5  # 集体访
LIST_LIMIT = 30  # list the valid codes in an error when there are at most this many

# --- resident ID (GB 11643-1999) ----------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_SHAPE = re.compile(r"^\d{17}[\dX]$", re.ASCII)  # ASCII digits only: ٠١٢ are digits to \d too


def resident_id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid 18-character resident ID number, or None if it is."""
    if not _ID_SHAPE.match(value):
        return "must be 17 digits and a check character (digit or X), 18 in all"
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "the date of birth (characters 7-14) is not a real date"
    if born.year < 1900 or born > date.today():
        return "the date of birth (characters 7-14) is out of range"
    expected = _ID_CHECK[sum(int(c) * w for c, w in zip(value[:17], _ID_WEIGHTS)) % 11]
    if value[17] != expected:
        return "the check character does not match (GB 11643)"
    return None


def mask_resident_id(value: str) -> str:
    """The form that may leave intake: region and last four kept, date of birth hidden."""
    return value[:6] + "*" * 8 + value[-4:]


def resident_key(secret: str, value: str) -> str:
    """Keyed hash of an ID number: links a resident's cases without revealing the number
    (the service hashes with ``Keys.id_hash``, shared/keys.py)."""
    return keyed_hash(secret, value)


_MOBILE = re.compile(r"^1[3-9]\d{9}$", re.ASCII)
_LANDLINE = re.compile(r"^0\d{2,3}-?\d{7,8}$", re.ASCII)


def phone_problem(value: str) -> str | None:
    if _MOBILE.match(value) or _LANDLINE.match(value):
        return None
    return "must be a mobile number (11 digits starting 13-19) or a landline like 0571-87654321"


# --- numbers and codes --------------------------------------------------------------------------

def local_year(moment: datetime) -> int:
    return moment.astimezone(CHINA_TZ).year


def case_number(county: str, year: int, seq: int) -> str:
    return f"{county}-{year}-{seq:06d}"


_QUERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read out over the phone


QUERY_CODE_LENGTH = 8  # 32 ** 8 = 2 ** 40 ≈ 1.1 × 10^12 codes (README, "The resident's routes")


def new_query_code() -> str:
    return "".join(secrets.choice(_QUERY_ALPHABET) for _ in range(QUERY_CODE_LENGTH))


def _each_case(answer: dict, change) -> dict:  # noqa: ANN001
    """``answer`` (a CaseAccepted, or a VisitLogged with its ``cases``) with ``change(case)`` applied."""
    if isinstance(answer.get("cases"), list):
        return {**answer, "cases": [change(c) for c in answer["cases"]]}
    return change(answer) if "query_code" in answer else answer


def seal_answer(keys: Keys, idempotency_key: str, answer: dict) -> dict:
    """An answer as intake stores it for an idempotent replay: each query code sealed (AES-GCM under
    the query-code key), bound to its idempotency key and case number, never stored in clear."""
    return _each_case(answer, lambda c: {**c, "query_code": keys.seal(
        c["query_code"], f"{idempotency_key}|{c['case_number']}")})


def open_answer(keys: Keys, idempotency_key: str, stored: dict) -> dict:
    """The stored answer as it was first given: the codes unsealed."""
    return _each_case(stored, lambda c: {**c, "query_code": keys.unseal(
        c["query_code"], f"{idempotency_key}|{c['case_number']}")})


# --- flags and repeats --------------------------------------------------------------------------

def is_collective(people_count: int) -> bool:
    return people_count >= COLLECTIVE_MIN_PEOPLE


def _bigrams(text: str) -> set[str]:
    text = re.sub(r"[\s\W_]+", "", text.lower())
    return {text[i:i + 2] for i in range(len(text) - 1)} or {text}


def title_similarity(a: str, b: str) -> float:
    """Jaccard similarity of character bigrams: works on Chinese text without segmentation."""
    x, y = _bigrams(a), _bigrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


@dataclass(frozen=True)
class EarlierCase:
    case_number: str
    title: str
    received_at: datetime


def find_repeat(title: str, earlier: Iterable[EarlierCase], threshold: float) -> str | None:
    """重复访: the most recent earlier case of the same resident with a similar title."""
    best = None
    for case in earlier:
        if title_similarity(title, case.title) >= threshold and (best is None or case.received_at > best.received_at):
            best = case
    return best.case_number if best else None


def not_accepted_again(final_case: str) -> Conflict:
    """不再受理 (信访工作条例 Art. 36): the resident asked for the re-review (复核) of this matter in
    ``final_case``; a petition on the same matter with the same facts and reasons is not taken in again."""
    return Conflict(
        f"不再受理：该信访人就同一事项已在案件 {final_case} 中请求复核，复核意见为最终处理意见，"
        f"以同一事实和理由再次提出的信访事项依《信访工作条例》第三十六条不予受理。"
        f" Not accepted again (不再受理, 信访工作条例 Art. 36): this resident asked for the re-review (复核) "
        f"of the same matter in case {final_case}; the re-review's opinion is final, and a petition on the "
        f"same facts and reasons is not accepted again.",
        {"reason": "not_accepted_again", "final_case": final_case})


# --- a submission against its channel and the directory -----------------------------------------

_CHANNEL_BLOCK = {"delegated": "delegation", "screening": "drive_id", "referral": "referral", "night_visit": "visit_id"}
_KNOWN_CHANNELS = {"walk_in", "letter", "phone", "online", "delegated", "night_visit", "screening", "referral"}


def check_submission(data: dict, d: Directory) -> list[FieldError]:
    """Every channel and directory rule a submission breaks; empty when it passes.

    Works on the plain dict (a validated model's dump, or a raw body that failed shape checks),
    so an answer names the unknown codes together with the malformed fields.
    """
    def text(value: object) -> str | None:
        return value if isinstance(value, str) else None

    errors: list[FieldError] = []
    channel = data.get("channel")
    resident = data.get("resident") if isinstance(data.get("resident"), dict) else {}
    for block_channel, field in _CHANNEL_BLOCK.items():
        present = data.get(field) is not None
        if channel == block_channel and not present:
            errors.append(FieldError(field, f"required for channel {block_channel}"))
        elif channel != block_channel and present and channel in _KNOWN_CHANNELS:
            errors.append(FieldError(field, f"only for channel {block_channel}"))
    if channel in ("walk_in", "online", "delegated") and not resident.get("id_number"):
        errors.append(FieldError("resident.id_number", f"required for channel {channel}"))
    if channel in ("online", "phone") and not resident.get("phone"):
        errors.append(FieldError("resident.phone", f"required for channel {channel}"))

    township_code = text(data.get("township"))
    township = d.townships.get(township_code) if township_code else None
    if township_code and township is None:
        errors.append(code_error("township", township_code, d.townships, "/api/v1/directory"))
    village_code = text(data.get("village"))
    if village_code:
        village = d.villages.get(village_code)
        if village is None or (township is not None and village[1].code != township.code):
            valid = {v.code: v for v in township.villages} if township else d.villages
            errors.append(code_error("village", village_code, valid, "/api/v1/directory",
                                     what=f"village of {township_code}" if township else "village"))
    category = text(data.get("category"))
    if category and category not in d.categories:
        errors.append(code_error("category", category, d.categories, "/api/v1/directory"))
    accused = data.get("accused_units") if isinstance(data.get("accused_units"), list) else []
    for i, unit in enumerate(accused):
        if isinstance(unit, str) and unit not in d.units:
            errors.append(code_error(f"accused_units[{i}]", unit, d.units, "/api/v1/directory", what="unit"))
    if data.get("accuses_unit") is False and accused:
        errors.append(FieldError("accuses_unit", "false (the case accuses no unit) contradicts accused_units"))
    delegation = data.get("delegation") if isinstance(data.get("delegation"), dict) else None
    if delegation is not None:
        agent_code, service_type = text(delegation.get("agent_id")), text(delegation.get("service_type"))
        agent = d.agents.get(agent_code) if agent_code else None
        if agent_code and agent is None:
            errors.append(code_error("delegation.agent_id", agent_code, d.agents, "/api/v1/directory/agents",
                                     what="agent"))
        if service_type and service_type not in d.service_types:
            errors.append(code_error("delegation.service_type", service_type, d.service_types,
                                     "/api/v1/directory", what="service type"))
        elif service_type and agent is not None and service_type not in agent[1].service_types:
            errors.append(FieldError("delegation.service_type", f"agency {agent[1].code} does not offer {service_type!r}",
                                     valid=list(agent[1].service_types)))
    return errors


def merge_errors(shape: list[FieldError], rules: list[FieldError]) -> list[FieldError]:
    """Shape errors first; a rule error only for a field the shape check did not already name."""
    named = {e.field for e in shape}
    return shape + [e for e in rules if e.field not in named]


def code_error(field: str, value: str, valid: dict, see: str, what: str | None = None) -> FieldError:
    what = what or field
    if len(valid) <= LIST_LIMIT:
        return FieldError(field, f"unknown {what} {value!r}", valid=sorted(valid))
    return FieldError(field, f"unknown {what} {value!r}; the valid codes are listed at {see}", see=see)


def local_date(moment: datetime) -> date:
    return moment.astimezone(CHINA_TZ).date()
