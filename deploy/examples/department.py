"""A department's own system on the bus, in plain nats-py: it imports nothing from xinfang.

It follows every event about its cases (cases.*.<unit>) through a durable consumer of its own, so
nothing is missed while it is offline, signs (签收) each case assigned to it, and acknowledges each
event once handled. Run:  python department.py nats://127.0.0.1:4250 forestry
"""
import asyncio
import json
import sys
import uuid
from datetime import datetime, timezone

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def main(url: str, unit: str, idle_exit: float | None) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    durable = f"unit_{unit}"
    await js.add_consumer("CASES", ConsumerConfig(
        durable_name=durable, filter_subject=f"cases.*.{unit}", ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL))
    sub = await js.pull_subscribe_bind(durable=durable, stream="CASES")
    while True:
        try:
            msgs = await sub.fetch(50, timeout=idle_exit or 5)
        except nats.errors.TimeoutError:
            if idle_exit:
                break
            continue
        for msg in msgs:
            event = json.loads(msg.data)
            print(msg.subject, event["case_id"], event.get("case", {}).get("title", ""), flush=True)
            if event["type"] == "CaseAssigned" and event["role"] == "lead":
                await sign(nc, js, unit, event["case_id"])
            await msg.ack()
    await nc.close()


async def sign(nc, js, unit: str, case_id: str) -> None:
    # Ask routing first: a command for a case that is not ours is refused, with the reason.
    answer = json.loads((await nc.request(f"routing.assignment.{unit}", json.dumps({"case_id": case_id}).encode(),
                                          timeout=5)).data)
    if not answer["assigned"]:
        print("refused:", answer["reason"], flush=True)
        return
    event = {"type": "UnitSigned", "schema_version": 1, "event_id": str(uuid.uuid4()),
             "occurred_at": datetime.now(timezone.utc).isoformat(), "actor": {"kind": "unit", "id": unit},
             "case_id": case_id, "unit": unit}
    # Nats-Msg-Id makes a retried publish harmless: the stream keeps the first one.
    await js.publish(f"cases.signed.{unit}", json.dumps(event).encode(), headers={"Nats-Msg-Id": event["event_id"]})
    print("signed", case_id, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else None))
