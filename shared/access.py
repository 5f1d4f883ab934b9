"""Who may call which HTTP route: the role × route table, in one place (DESIGN §9; README, "Roles and tokens").

Every route of the four services is here, keyed ``"METHOD /path"`` as FastAPI declares it. The routes
take their guard from this table (``shared.http.Guard``), a service refuses to start with a route
that is in neither ``TABLE`` nor ``OPEN`` or that does not carry its guard, and ``xinfang token
roles`` prints the README's table from it. Change a role here, and the routes, the README table and
``tests/test_roles.py`` all follow.

The roles (a token carries one; ``shared/tokens.py``):

- ``clerk``: the bureau's intake desk and case staff (工作人员), with a staff id;
- ``agent``: a delegated agent (代办员), bound to one agent of the directory;
- ``unit``: a township or department (责任单位), bound to one unit code;
- ``unit_head``: the head of a unit (本机关负责人), bound to one unit code: a unit's reader, who
  also decides its extensions (延期, 信访工作条例 Art. 34);
- ``supervisor``: the supervision office (督办科), with a staff id;
- ``leader``: a county leader (包案领导), bound to one leader of the directory;
- ``ops``: operations: sweeps and, in demo/test mode, the clocks;

and the resident, who has no token: the resident routes (``public``) take the case number and the
query code instead.

``own`` says what a scoped role (``agent``, ``unit``, ``leader``) sees on a route it may call: a
unit the cases assigned to it now or before (a case that accuses a unit is never assigned to it),
a leader the cases it leads (包案), an agent the cases it filed. Anything else answers 404, as a
missing case does, so that a case's existence does not leak.
"""
from __future__ import annotations

from dataclasses import dataclass

ROLES = ("clerk", "agent", "unit", "unit_head", "supervisor", "leader", "ops")
# Roles bound to one id of the directory: a token of one of these carries that role alone.
SCOPED = frozenset({"agent", "unit", "unit_head", "leader"})
# What each role's token is bound to (the CLI's option, the Principal's field).
BINDING = {"clerk": "staff", "supervisor": "staff", "agent": "agent", "unit": "unit", "unit_head": "unit",
           "leader": "leader", "ops": None}


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]  # who may call it with a token
    what: str  # one line for the README
    own: str = ""  # what the scoped roles among ``roles`` are limited to
    public: bool = False  # the resident's routes and the directory: no token needed (one sent is ignored)


def _r(roles: str, what: str, own: str = "") -> Rule:
    return Rule(frozenset(roles.split()), what, own)


def _public(what: str) -> Rule:
    return Rule(frozenset(), what, public=True)


CLOCK = _r("supervisor ops", "demo/test mode only: set this service's clock")
CASE_READERS = "clerk supervisor unit unit_head leader"
UNIT_LEADER_OWN = ("unit: cases assigned to it now or before; unit_head: the same as its unit; "
                   "leader: cases it leads")

TABLE: dict[str, dict[str, Rule]] = {
    "intake": {
        "POST /api/v1/cases": _r("clerk agent", "register a case from any channel",
                                 "agent: delegated cases only, naming itself as the agent"),
        "GET /api/v1/cases/{number}": _r("clerk supervisor agent", "the case (the resident ID masked)",
                                         "agent: the cases it filed"),
        "GET /api/v1/cases/{number}/registration.docx": _r("clerk supervisor agent", "信访事项登记表 of the case (DOCX)",
                                                           "agent: the cases it filed"),
        "POST /api/v1/visits": _r("clerk", "a night-visit log; each problem becomes a case"),
        "POST /api/v1/drives": _r("clerk", "open a screening drive"),
        "GET /api/v1/drives": _r("clerk supervisor", "the drives"),
        "GET /api/v1/drives/{drive_id}": _r("clerk supervisor", "a drive"),
        "POST /api/v1/drives/{drive_id}/close": _r("clerk", "close a drive"),
        "POST /api/v1/drives/{drive_id}/rows": _r("clerk", "a chunk of a drive's rows (`xinfang import`)"),
        "POST /api/v1/drives/{drive_id}/import": _r("clerk", "upload a drive's disputes (CSV, XLSX)"),
        "POST /api/v1/cases/{number}/feedback": _public("the resident's feedback, with the query code"),
        "POST /api/v1/cases/{number}/reviews": _public("the resident's review request, with the query code"),
        "GET /api/v1/directory": _public("the codes the API accepts"),
        "GET /api/v1/directory/agents": _public("delegated agents and their agencies"),
        "PUT /api/v1/clock": CLOCK,
    },
    "routing": {
        "GET /api/v1/routing/{case_id}": _r(CASE_READERS, "why a case went where it went", UNIT_LEADER_OWN),
        "GET /api/v1/routing/{case_id}/assignment-slip.docx": _r(CASE_READERS, "受理分流指派通知单 of the case (DOCX)",
                                                                 UNIT_LEADER_OWN),
        "GET /api/v1/forms/reception-day.xlsx": _r("clerk supervisor", "大接访交办表 of a leaders' reception day (XLSX)"),
        "GET /api/v1/triage": _r("clerk supervisor", "the triage queue"),
        "POST /api/v1/triage/{case_id}/decision": _r("supervisor", "assign a triaged case (recorded as the token's staff id)"),
        "POST /api/v1/routing/{case_id}/leader": _r("supervisor", "name another lead leader (包案领导) with a reason "
                                                    "(recorded as the token's staff id)"),
        "POST /api/v1/routing/explain": _r("clerk supervisor", "dry run: where a draft case would go"),
        "PUT /api/v1/clock": CLOCK,
    },
    "supervision": {
        "GET /api/v1/cases": _r(CASE_READERS, "open cases by lead unit and state",
                                "unit, unit_head: its own (`unit=` its code or omitted); leader: cases it leads"),
        "GET /api/v1/cases/{case_id}": _r(CASE_READERS, "a case's state, units, leader and due dates", UNIT_LEADER_OWN),
        "GET /api/v1/cases/{case_id}/timeline": _r(CASE_READERS, "every event of a case, who and when",
                                                   "unit, unit_head: cases assigned to it now or before, other units' steps "
                                                   "without their ids; leader: cases it leads"),
        "GET /api/v1/due": _r(CASE_READERS, "due dates within `days`", "unit, unit_head: its own cases; leader: cases it leads"),
        "GET /api/v1/overdue": _r(CASE_READERS, "overdue due dates", "unit, unit_head: its own cases; leader: cases it leads"),
        "POST /api/v1/cases/{case_id}/extension": _r("unit_head", "approve or refuse the unit's extension request "
                                                     "(延期审批 by the unit's own head, Art. 34)",
                                                     "unit_head: a case its unit leads"),
        "POST /api/v1/cases/{case_id}/objection": _r("supervisor", "approve or reject a unit's objection (异议审核, "
                                                     "Art. 23; recorded as the token's staff id)"),
        "GET /api/v1/cases/{case_id}/documents": _r(CASE_READERS, "the written notices of a case (受理/不予受理告知书, "
                                                    "延期告知书, 处理意见书)", UNIT_LEADER_OWN),
        "GET /api/v1/cases/{case_id}/documents/{doc_id}.{kind}": _r(CASE_READERS, "a notice as text or DOCX",
                                                                     UNIT_LEADER_OWN),
        "POST /api/v1/progress/documents/{doc_id}.docx": _public("a notice of the resident's case as DOCX, with the "
                                                                  "query code"),
        "POST /api/v1/notices": _r("supervisor", "issue a supervision notice (recorded as the token's staff id)"),
        # A notice lists other units' overdue cases too: a unit replies to it, and does not read it here.
        "GET /api/v1/notices": _r("clerk supervisor", "the notices"),
        "GET /api/v1/notices/{notice_id}": _r("clerk supervisor", "a notice"),
        "GET /api/v1/notices/{notice_id}/document.{kind}": _r("clerk supervisor", "a notice as Markdown or DOCX"),
        "POST /api/v1/meetings": _r("supervisor", "record a joint meeting (联席会议) and its decisions"),
        "GET /api/v1/meetings": _r("clerk supervisor", "the joint meetings"),
        "GET /api/v1/meetings/decisions": _r("clerk supervisor unit unit_head", "the meetings' decisions by status",
                                             "unit, unit_head: its own decisions"),
        "GET /api/v1/meetings/{meeting_id}": _r("clerk supervisor", "a joint meeting and its decisions"),
        "GET /api/v1/meetings/{meeting_id}/minutes.docx": _r("clerk supervisor", "the minutes (会议纪要, DOCX)"),
        "POST /api/v1/meetings/{meeting_id}/decisions/{n}/done": _r("supervisor unit unit_head",
                                                                    "report a decision carried out",
                                                                    "unit, unit_head: its own decisions"),
        "POST /api/v1/notices/{notice_id}/replies": _r("clerk supervisor unit", "record a unit's reply to a notice",
                                                       "unit: its own reply to a notice naming it"),
        "POST /api/v1/progress": _public("the resident's progress lookup, with the query code"),
        "POST /api/v1/sweep": _r("supervisor ops", "sweep the deadlines now"),
        "POST /api/v1/clock/advance": _r("supervisor ops", "demo/test mode only: move the clock, then sweep"),
        "PUT /api/v1/clock": CLOCK,
    },
    "scoring": {
        "GET /api/v1/reports/{period}": _r("clerk supervisor leader", "the report for a period and filter"),
        "GET /api/v1/reports/{period}/report.{fmt}": _r("clerk supervisor leader", "the report as CSV, XLSX or Markdown"),
        "GET /api/v1/scorecards/{period}": _r("clerk supervisor leader", "the scorecards"),
        "GET /api/v1/accountability/{period}": _r("clerk supervisor leader", "the accountability list"),
        "POST /api/v1/periods/{period}/close": _r("supervisor", "freeze a period (recorded as the token's staff id)"),
        "PUT /api/v1/clock": CLOCK,
    },
}

# Open on every service, token or not: liveness, readiness, Prometheus (codes and route templates
# only, never personal data; a scraper needs no token, and one sent is ignored), the API docs and
# the bus's contract.
OPEN = ("GET /healthz", "GET /readyz", "GET /metrics", "GET /asyncapi.json", "GET /openapi.json", "GET /docs",
        "GET /docs/oauth2-redirect", "GET /redoc")


def rule(service: str, key: str) -> Rule:
    try:
        return TABLE[service][key]
    except KeyError:
        raise KeyError(f"{service}: {key} is not in shared/access.py TABLE") from None


def _limited(role: str, own: str) -> bool:
    """Whether ``own`` limits ``role`` ("unit: …" or "unit, unit_head: …")."""
    return any(role in part.split(":")[0].replace(",", " ").split() for part in own.split(";"))


def markdown() -> str:
    """The README's role × route table: ✓ allowed, *own* limited as the last column says, blank refused."""
    head = ["service", "route", *ROLES, "no token", "what", "*own*"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for service, routes in TABLE.items():
        for key, r in routes.items():
            method, path = key.split(" ", 1)
            cells = ["✓" if r.public else "" if role not in r.roles else "*own*" if _limited(role, r.own) else "✓"
                     for role in ROLES]
            lines.append(f"| {service} | `{method} {path}` | " + " | ".join(cells)
                         + f" | {'✓' if r.public else ''} | {r.what} | {r.own} |")
    lines.append(f"| every service | {', '.join(f'`{k}`' for k in OPEN)} | " + " | ".join("✓" for _ in ROLES)
                 + " | ✓ | open: health, readiness, Prometheus (no personal data), API docs, the bus's contract | |")
    return "\n".join(lines) + "\n"
