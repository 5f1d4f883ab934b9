"""A unit's client: its cases come in on ``cases.*.<code>`` through a durable consumer of its own
(so a unit that was offline gets what it missed, in order), and its commands go out as events
under its own code only. Importable by a department's own system; ``xinfang unit`` wraps it.

    async with UnitClient("nats://127.0.0.1:4250", "forestry", creds=Path("unit_forestry.json")) as unit:
        async for event in unit.events():
            if isinstance(event, CaseAssigned):
                await unit.sign(event.case_id)

``creds`` is the unit's NATS credentials file (``unit_<code>.json``, shared/natsauth.py): its user
may publish only under its own code and read only its own consumer, and receives its replies and
pull deliveries on its own inbox prefix ``_INBOX_<code>``, with which the client connects.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from shared import events as ev
from shared import natsauth, subjects
from shared.clock import Clock, SystemClock

ReplyResult = ev.CaseReplied.model_fields["result"].annotation


class Refused(Exception):
    """The command was not sent: the reason says why (e.g. the case is not assigned to this unit);
    ``error`` is routing's code for it (``unknown_case``, ``not_assigned``)."""

    def __init__(self, reason: str, error: str | None = None) -> None:
        super().__init__(reason)
        self.error = error


class UnitClient:
    def __init__(self, nats_url: str, unit: str, *, stream: str = "CASES", staff_id: str | None = None,
                 clock: Clock | None = None, creds: Path | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.nats_url, self.unit, self.stream, self.creds, self.tls = nats_url, unit, stream, creds, tls
        self.actor = ev.Actor(kind="unit", id=staff_id or unit)
        self.clock = clock or SystemClock()  # the simulator passes its own: events carry simulated time
        self.nc = None

    async def __aenter__(self) -> UnitClient:
        options = {"inbox_prefix": natsauth.inbox_prefix(natsauth.unit_user(self.unit)),
                   **natsauth.file_options(self.creds)}
        if self.tls is not None:
            options["tls"] = self.tls
        self.nc = await nats.connect(self.nats_url, name=f"unit-{self.unit}", **options)
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *_exc) -> None:  # noqa: ANN002
        await self.nc.flush()  # acks and commands are out; drain() would wait on the open fetch
        await self.nc.close()

    # --- in -------------------------------------------------------------------------------------

    async def events(self, *, durable: str | None = None, idle_timeout: float | None = None,
                     batch: int = 50) -> AsyncIterator[ev.Event]:
        """Every event about this unit's cases, oldest first, each acknowledged once the loop body
        has run for it: the refusals of its own events (``EventRefused``) and what the resident and
        the bureau did about its cases (``UnitNotified``) included. Stops after ``idle_timeout``
        seconds without news (None: never).

        The durable consumer keeps the unit's place across restarts; an existing one is bound as it
        is, whatever its settings. An event taken but not acknowledged (the process died in the loop
        body) comes again after the consumer's ``ack_wait`` (60 s here)."""
        name = durable or natsauth.unit_consumer(self.unit)
        try:
            await self.js.consumer_info(self.stream, name)
        except NotFoundError:
            # name and durable_name both: nats-py then sends the filter in the request's subject
            # ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>), the only form the unit's user may use.
            await self.js.add_consumer(self.stream, ConsumerConfig(
                name=name, durable_name=name, filter_subject=subjects.for_unit(self.unit),
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=60))
        sub = await self.js.pull_subscribe_bind(durable=name, stream=self.stream)
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=idle_timeout if idle_timeout is not None else 5.0)
            except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch finds nothing
                if idle_timeout is not None:
                    return
                continue
            for msg in msgs:
                try:
                    event = ev.decode(msg.data)
                except ev.UndecodableEvent:
                    await msg.term()  # not for this client's version; supervision keeps the record
                    continue
                yield event
                await msg.ack()

    async def timeline(self, case_id: str) -> ev.TimelineAnswer:
        """The timeline of a case this unit holds or held: every step, applied or refused and why."""
        answer = await self.nc.request(subjects.TIMELINE_QUERY.format(unit=self.unit),
                                       ev.TimelineQuery(case_id=case_id).model_dump_json().encode(), timeout=5)
        return ev.TimelineAnswer.model_validate_json(answer.data)

    # --- out ------------------------------------------------------------------------------------

    async def sign(self, case_id: str) -> ev.UnitSigned:
        """签收."""
        return await self._send(ev.UnitSigned(case_id=case_id, unit=self.unit, actor=self.actor, occurred_at=self.clock.now()))

    async def return_case(self, case_id: str, reason: str) -> ev.CaseReturned:
        """异议 (退回): not this unit's matter, with reasons, within 5 working days of receipt (Art. 23);
        the bureau decides, and routing chooses again only if it approves."""
        return await self._send(ev.CaseReturned(case_id=case_id, unit=self.unit, actor=self.actor, occurred_at=self.clock.now(), reason=reason))

    async def decide_acceptance(self, case_id: str, decision: str, reason: str = "",
                                legal_path: str | None = None) -> ev.AcceptanceDecided:
        """受理决定 (Art. 23), after the sign-for: accepted, not_accepted (with the reason and the legal
        path, 导入法定途径) or forwarded (an objection). The resident is told in writing."""
        return await self._send(ev.AcceptanceDecided(case_id=case_id, unit=self.unit, actor=self.actor,
                                                     occurred_at=self.clock.now(), decision=decision, reason=reason,
                                                     legal_path=legal_path))

    async def decide_extension(self, case_id: str, approved: bool, days: int, reason: str,
                               approved_by: str) -> ev.ExtensionDecided:
        """延期审批 by this unit's own head (本机关负责人, Art. 34), decided in the unit's own system."""
        return await self._send(ev.ExtensionDecided(case_id=case_id, unit=self.unit, actor=self.actor,
                                                    occurred_at=self.clock.now(), approved=approved,
                                                    days=days if approved else 0, reason=reason,
                                                    approved_by=approved_by))

    async def report_progress(self, case_id: str, note: str) -> ev.ProgressReported:
        return await self._send(ev.ProgressReported(case_id=case_id, unit=self.unit, actor=self.actor, occurred_at=self.clock.now(), note=note))

    async def request_extension(self, case_id: str, days: int, reason: str) -> ev.ExtensionRequested:
        """延期申请, before the due date; the unit's own head decides (:meth:`decide_extension`)."""
        return await self._send(ev.ExtensionRequested(case_id=case_id, unit=self.unit, actor=self.actor, occurred_at=self.clock.now(),
                                                      days=days, reason=reason))

    async def reply(self, case_id: str, result: ReplyResult, text: str,  # type: ignore[valid-type]
                    review_outcome: str | None = None) -> ev.CaseReplied:
        """处理意见书: the outcome and the written opinion; a reviewing body (复查/复核机关) gives its
        ``review_outcome`` (upheld, changed, revoked)."""
        return await self._send(ev.CaseReplied(case_id=case_id, unit=self.unit, actor=self.actor, occurred_at=self.clock.now(), result=result,
                                               text=text, review_outcome=review_outcome))

    async def _send(self, event: ev.UnitCaseEvent) -> ev.UnitCaseEvent:
        answer = await self.nc.request(subjects.ASSIGNMENT_QUERY.format(unit=self.unit),
                                       ev.AssignmentQuery(case_id=event.case_id).model_dump_json().encode(), timeout=5)
        check = ev.AssignmentAnswer.model_validate_json(answer.data)
        if not check.assigned:
            raise Refused(check.reason or "refused", check.error)
        # The subject carries this unit's own code (event.unit): a unit publishes only as itself.
        await self.js.publish(event.subject, ev.encode(event), stream=self.stream,
                              headers={"Nats-Msg-Id": event.event_id})
        return event
