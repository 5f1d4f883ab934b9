"""``xinfang unit …``: a department follows its cases and acts on them from a terminal."""
from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from pathlib import Path

from services.units.client import Refused, UnitClient
from shared import events as ev
from shared.events import CaseReplied


def add_parser(sub: argparse._SubParsersAction) -> None:
    unit = sub.add_parser("unit", help="a department's side: watch its cases, sign, return, reply, …")
    cmds = unit.add_subparsers(dest="unit_command", required=True)
    watch = cmds.add_parser("watch", help="follow the unit's cases and reminders (everything missed first)")
    watch.add_argument("code")
    add_creds(watch)
    for name, help_ in (("sign", "签收 a case"), ("accept", "decide on acceptance (受理决定, after the sign-for)"),
                        ("return", "object (异议): the case is not the unit's; the bureau decides"),
                        ("progress", "report progress"), ("extend", "ask for an extension"),
                        ("approve-extension", "the unit head's decision on its extension request (延期审批)"),
                        ("reply", "issue the handling opinion (处理意见书)")):
        cmd = cmds.add_parser(name, help=help_)
        cmd.add_argument("code", help="the unit's own code")
        cmd.add_argument("case", help="the case number")
        add_creds(cmd)
        if name == "return":
            cmd.add_argument("--reason", required=True)
        if name == "accept":
            cmd.add_argument("--decision", required=True, choices=("accepted", "not_accepted", "forwarded"))
            cmd.add_argument("--reason", default="")
            cmd.add_argument("--legal-path", choices=sorted(ev.LEGAL_PATHS))
        if name == "approve-extension":
            cmd.add_argument("--refuse", action="store_true", help="refuse instead of approving")
            cmd.add_argument("--days", type=int, default=0)
            cmd.add_argument("--reason", required=True)
            cmd.add_argument("--head", required=True, help="the head who decides (本机关负责人), e.g. 局长")
        if name == "progress":
            cmd.add_argument("--note", required=True)
        if name == "extend":
            cmd.add_argument("--days", type=int, required=True)
            cmd.add_argument("--reason", required=True)
        if name == "reply":
            cmd.add_argument("--result", required=True, choices=CaseReplied.model_fields["result"].annotation.__args__)
            cmd.add_argument("--text", required=True)
            cmd.add_argument("--review-outcome", choices=("upheld", "changed", "revoked"),
                             help="a reviewing body's opinion (复查/复核意见)")


def add_creds(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--creds", type=Path, help=(
        "the unit's NATS credentials (JSON: user, password, inbox_prefix); default XF_NATS_CREDS, else "
        "unit_<code>.json in <data_dir>/secrets/nats/ when the embedded run made it"))


def run(args: argparse.Namespace, nats_url: str, stream: str, creds: Path | None = None,
        tls: ssl.SSLContext | None = None) -> int:
    """``creds``: the default when --creds is not given."""
    try:
        return asyncio.run(_run(args, nats_url, stream, args.creds or creds, tls))
    except KeyboardInterrupt:
        return 0


async def _run(args: argparse.Namespace, nats_url: str, stream: str, creds: Path | None,
               tls: ssl.SSLContext | None) -> int:
    async with UnitClient(nats_url, args.code, stream=stream, creds=creds, tls=tls) as unit:
        if args.unit_command == "watch":
            print(f"{args.code}: following cases.*.{args.code} (Ctrl-C stops)", file=sys.stderr, flush=True)
            async for event in unit.events():
                print(describe(event), flush=True)
            return 0
        try:
            if args.unit_command == "sign":
                await unit.sign(args.case)
            elif args.unit_command == "return":
                await unit.return_case(args.case, args.reason)
            elif args.unit_command == "progress":
                await unit.report_progress(args.case, args.note)
            elif args.unit_command == "extend":
                await unit.request_extension(args.case, args.days, args.reason)
            elif args.unit_command == "accept":
                await unit.decide_acceptance(args.case, args.decision, args.reason, args.legal_path)
            elif args.unit_command == "approve-extension":
                await unit.decide_extension(args.case, not args.refuse, args.days, args.reason, args.head)
            elif args.unit_command == "reply":
                await unit.reply(args.case, args.result, args.text, args.review_outcome)
        except Refused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(f"{args.unit_command}: {args.case} sent as {args.code}")
        return 0


def describe(event: ev.Event) -> str:
    """One line per event, as a unit's clerk reads it."""
    when = event.occurred_at.astimezone().strftime("%Y-%m-%d %H:%M")
    case = getattr(event, "case_id", "")
    if isinstance(event, ev.CaseAssigned):
        role = {"lead": "主办 lead", "co": "协办 co-handling", "reviewer": f"复查/复核 {event.review_level}"}[event.role]
        return f"{when}  {case}  assigned ({role})  {event.case.title}  [{event.case.township}]"
    if isinstance(event, (ev.CaseReminded, ev.CaseOverdue, ev.CaseEscalated)):
        return f"{when}  {case}  {event.type.removeprefix('Case').lower()}: {event.due_kind} due {event.due_at:%Y-%m-%d}"
    if isinstance(event, ev.ExtensionDecided):
        return f"{when}  {case}  extension {'approved' if event.approved else 'refused'} {event.reason}"
    if isinstance(event, ev.ObjectionDecided):
        return f"{when}  {case}  objection {'approved' if event.approved else 'rejected'} {event.reason}"
    if isinstance(event, ev.EventRefused):
        return f"{when}  {case or '-'}  REFUSED {event.refused_type or 'event'} ({event.kind}, by {event.by}): {event.reason}"
    if isinstance(event, ev.UnitNotified):
        return f"{when}  {case}  notified: {event.event.type}"
    return f"{when}  {case}  {event.type}"
