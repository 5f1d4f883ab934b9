"""A department's own system on the bus, in plain nats-py: it imports nothing from xinfang.

It follows every event about its cases (cases.*.<unit>) through a durable consumer of its own, so
nothing is missed while it is offline, signs (签收) each case assigned to it as lead, prints the
refusals of its own events (cases.refused.<unit>) and acknowledges each event once handled.
The contract (every subject and payload) is docs/asyncapi.yaml, or `xinfang asyncapi`.

Run:  python department.py nats://127.0.0.1:4250 forestry [IDLE_EXIT_SECONDS] [--creds unit_forestry.json]

--creds is the unit's NATS credentials file, as the bureau hands it out (`xinfang nats-config`, or
<data_dir>/secrets/nats/unit_<code>.json of the embedded run): JSON with "user", "password",
"inbox_prefix" and, when the server speaks TLS, "tls_ca" (the CA file to trust). The unit's NATS user
may publish only cases.<verb>.<unit>, request only routing.assignment.<unit> and timeline.<unit>, read
only its own consumer unit_<unit> (created with its filter in the request subject, which nats-py does
when the config has both name and durable_name), and receive only on its own inbox prefix: connect
with that prefix, or no reply ever reaches it.
"""
import argparse
import asyncio
import json
import ssl
import uuid
from datetime import datetime, timezone

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError


async def main(url: str, unit: str, idle_exit: float | None, creds_file: str | None = None) -> None:
    options = {"inbox_prefix": f"_INBOX_{unit}"}
    if creds_file:
        with open(creds_file, encoding="utf-8") as f:
            creds = json.load(f)
        options = {"user": creds["user"], "password": creds["password"], "inbox_prefix": creds["inbox_prefix"]}
        if creds.get("tls_ca"):
            options["tls"] = ssl.create_default_context(cafile=creds["tls_ca"])
    nc = await nats.connect(url, **options)
    js = nc.jetstream()
    durable = f"unit_{unit}"
    try:
        # Bind to the consumer as it is, if it exists: it keeps our place in the stream across
        # restarts, whatever settings an earlier version of this program gave it.
        await js.consumer_info("CASES", durable)
    except NotFoundError:
        # ack_wait: an event taken but not acknowledged (say, this process died while handling it)
        # is delivered again after 60 s, so after a restart expect to see it once more.
        await js.add_consumer("CASES", ConsumerConfig(
            name=durable, durable_name=durable, filter_subject=f"cases.*.{unit}", ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=60))
    sub = await js.pull_subscribe_bind(durable=durable, stream="CASES")
    while True:
        try:
            msgs = await sub.fetch(50, timeout=idle_exit or 5)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises either when nothing comes
            if idle_exit:
                break
            continue
        for msg in msgs:
            event = json.loads(msg.data)
            if event["type"] == "EventRefused":
                print("refused:", event["refused_type"], event["case_id"], event["reason"], flush=True)
            else:
                print(msg.subject, event.get("case_id"), event.get("case", {}).get("title", ""), flush=True)
            if event["type"] == "CaseAssigned" and event["role"] == "lead":
                await sign(nc, js, unit, event["case_id"])
            await msg.ack()
    await nc.close()


async def sign(nc, js, unit: str, case_id: str) -> None:
    # Ask routing first: the answer says why not (error: unknown_case, not_assigned, malformed).
    answer = json.loads((await nc.request(f"routing.assignment.{unit}", json.dumps({"case_id": case_id}).encode(),
                                          timeout=5)).data)
    if not answer["assigned"]:
        print("not sent:", answer["error"], answer["reason"], flush=True)
        return
    event = {"type": "UnitSigned", "schema_version": 1, "event_id": str(uuid.uuid4()),
             "occurred_at": datetime.now(timezone.utc).isoformat(), "actor": {"kind": "unit", "id": unit},
             "case_id": case_id, "unit": unit}
    # Nats-Msg-Id makes a retried publish harmless: the stream keeps the first one. A PubAck only
    # says the stream stored it; if the bureau refuses it, an EventRefused comes on cases.refused.<unit>.
    await js.publish(f"cases.signed.{unit}", json.dumps(event).encode(), headers={"Nats-Msg-Id": event["event_id"]})
    print("signed", case_id, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a department's client on the xinfang bus")
    parser.add_argument("url", help="the bureau's NATS, e.g. nats://127.0.0.1:4250")
    parser.add_argument("unit", help="this department's unit code, e.g. forestry")
    parser.add_argument("idle_exit", nargs="?", type=float, help="exit after this many seconds without news")
    parser.add_argument("--creds", help="the unit's NATS credentials file (JSON)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.unit, args.idle_exit, args.creds))
