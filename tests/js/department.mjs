// A department's own system on the xinfang bus, in JavaScript, written from the published contract
// alone (README "The department side" and "Events", shared/events.py): it imports nothing from the
// project, only the official nats.js v3 packages.
//
//   node department.mjs NATS_URL UNIT OTHER_CASE_ID [DEADLINE_S] [CREDS_JSON]
//
// CREDS_JSON is the unit's NATS credentials file as the bureau hands it out: {"user", "password",
// "inbox_prefix", optional "tls_ca"}. The unit's user may receive only on its own inbox prefix, so
// the connection takes it (inboxPrefix); and it may touch no JetStream API but the stream's and its
// own consumer's, so the manager skips its account-info check (checkAPI: false). Without the file it
// connects anonymously, with the same prefix.
//
// It follows every event about its cases (cases.*.<UNIT>) through its own durable pull consumer
// unit_<UNIT> on the stream CASES (created if missing, bound to if it exists), and acks each one
// once handled. For each case assigned to it as lead (主办) it asks routing whether the case is its
// own (routing.assignment.<UNIT>), then signs for it (UnitSigned on cases.signed.<UNIT>) and replies
// (CaseReplied on cases.replied.<UNIT>). On purpose, it also signs for OTHER_CASE_ID, a case that is
// not its own, without asking routing first, and waits for the system to say so: an EventRefused
// for that event on cases.refused.<UNIT>, which arrives on the same consumer.
//
// It prints one JSON line per thing it saw or did, and exits 0 once it has signed and replied its
// case and received the refusal; 1 after DEADLINE_S seconds (default 60), naming what is missing,
// or at once when the system refuses one of its legitimate events.
import { readFileSync } from "node:fs";
import { connect, nanos } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError }
  from "@nats-io/jetstream";

const STREAM = "CASES";
const [url, unit, otherCaseId, deadlineArg, credsPath] = process.argv.slice(2);
if (!url || !unit || !otherCaseId) {
  console.error("usage: node department.mjs NATS_URL UNIT OTHER_CASE_ID [DEADLINE_S] [CREDS_JSON]");
  process.exit(2);
}
const deadlineS = Number(deadlineArg ?? 60);

const say = (line) => console.log(JSON.stringify(line));

// The envelope every event carries (shared/events.py), as this unit: type, schema_version,
// event_id (also the Nats-Msg-Id header, so a retried publish is stored once), occurred_at (UTC),
// actor, case_id, unit.
function envelope(type, caseId, extra = {}) {
  return {
    type, schema_version: 1, event_id: crypto.randomUUID(), occurred_at: new Date().toISOString(),
    actor: { kind: "unit", id: unit }, case_id: caseId, unit, ...extra,
  };
}

const creds = credsPath ? JSON.parse(readFileSync(credsPath, "utf8")) : null;
const nc = await connect({
  servers: url, name: `department-js-${unit}`, inboxPrefix: creds?.inbox_prefix ?? `_INBOX_${unit}`,
  ...(creds ? { user: creds.user, pass: creds.password } : {}),
  ...(creds?.tls_ca ? { tls: { caFile: creds.tls_ca } } : {}),
});
const js = jetstream(nc);
const jsm = await jetstreamManager(nc, { checkAPI: false });

async function publish(verb, event) {
  // A unit publishes only under its own code: cases.<verb>.<unit>.
  const ack = await js.publish(`cases.${verb}.${unit}`, JSON.stringify(event), { msgID: event.event_id });
  return { seq: ack.seq, duplicate: ack.duplicate };
}

async function assignment(caseId) {
  const answer = await nc.request(`routing.assignment.${unit}`, JSON.stringify({ case_id: caseId }),
    { timeout: 5000 });
  return answer.json(); // {assigned, role, error: unknown_case|not_assigned|malformed, reason}
}

// --- the durable consumer: create it, or bind to the one that exists ------------------------------

const durable = `unit_${unit}`;
const filter = `cases.*.${unit}`;
async function ensureConsumer() {
  try {
    const info = await jsm.consumers.info(STREAM, durable);
    say({ did: "bound", consumer: durable, filter: info.config.filter_subject ?? info.config.filter_subjects });
    return;
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
  }
  try {
    await jsm.consumers.add(STREAM, {
      durable_name: durable, filter_subject: filter, ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All, ack_wait: nanos(60_000),
    });
    say({ did: "created", consumer: durable, filter });
  } catch (err) {
    // Another instance of this department created it meanwhile (with its own settings): bind to it.
    await jsm.consumers.info(STREAM, durable);
    say({ did: "bound", consumer: durable, filter, after: String(err.message ?? err) });
  }
}
await ensureConsumer();
const consumer = await js.consumers.get(STREAM, durable);

// --- what it is waiting for ----------------------------------------------------------------------

const signed = new Set(); // case ids this unit signed for
const replied = new Set(); // case ids this unit replied to
const own = new Map(); // event_id → what it is, for this unit's own legitimate events
let refusal = null; // the refusal of the sign-for of OTHER_CASE_ID

// On purpose: a sign-for of a case that is not ours, without asking routing first.
const wrong = envelope("UnitSigned", otherCaseId);
const wrongAck = await publish("signed", wrong);
say({ did: "signed_not_own", case_id: otherCaseId, event_id: wrong.event_id, ...wrongAck });

const done = () => signed.size > 0 && [...signed].every((c) => replied.has(c)) && refusal !== null;
function missing() {
  const out = [];
  if (signed.size === 0) out.push("no CaseAssigned as lead was signed for");
  for (const c of signed) if (!replied.has(c)) out.push(`no reply to ${c}`);
  if (refusal === null) out.push(`no EventRefused for ${wrong.event_id} (the sign-for of ${otherCaseId})`);
  return out;
}

let exitCode = 1;
const messages = await consumer.consume({ max_messages: 50 });
const timer = setTimeout(() => {
  say({ deadline_s: deadlineS, missing: missing() });
  messages.stop();
}, deadlineS * 1000);

async function handle(m) {
  let event;
  try {
    event = m.json();
  } catch {
    say({ saw: "undecodable", subject: m.subject, seq: m.seq });
    m.term(); // retrying cannot make it readable
    return;
  }
  say({ saw: event.type, subject: m.subject, case_id: event.case_id ?? null, event_id: event.event_id,
        ...(event.role ? { role: event.role } : {}) });

  if (event.type === "CaseAssigned" && event.role === "lead") {
    const answer = await assignment(event.case_id);
    say({ asked: "routing.assignment", case_id: event.case_id, ...answer });
    if (!answer.assigned) return; // no longer ours (returned, re-routed): nothing to do
    if (!signed.has(event.case_id)) {
      const sign = envelope("UnitSigned", event.case_id);
      own.set(sign.event_id, "UnitSigned");
      say({ did: "signed", case_id: event.case_id, event_id: sign.event_id, ...(await publish("signed", sign)) });
      signed.add(event.case_id);
    }
    if (!replied.has(event.case_id)) {
      const reply = envelope("CaseReplied", event.case_id, { result: "resolved", text: "经现场核查，已依法办理采伐许可，答复信访人。" });
      own.set(reply.event_id, "CaseReplied");
      say({ did: "replied", case_id: event.case_id, event_id: reply.event_id, ...(await publish("replied", reply)) });
      replied.add(event.case_id);
    }
  } else if (event.type === "EventRefused") {
    say({ refused: event.refused_event_id, refused_type: event.refused_type, case_id: event.case_id,
          kind: event.kind, reason: event.reason, by: event.by, event_id: event.event_id });
    if (event.refused_event_id === wrong.event_id) {
      refusal = event;
    } else if (own.has(event.refused_event_id)) {
      throw new Error(`the system refused this unit's own ${own.get(event.refused_event_id)}: ${event.reason}`);
    }
  }
}

try {
  for await (const m of messages) {
    try {
      await handle(m);
      m.ack();
    } catch (err) {
      if (String(err.message).startsWith("the system refused")) {
        m.ack();
        say({ error: err.message });
        break;
      }
      say({ error: String(err.message ?? err), subject: m.subject, retry: true });
      m.nak(1000); // e.g. routing did not answer: try this event again in a second
      continue;
    }
    if (done()) {
      say({ done: true, signed: [...signed], replied: [...replied], refused: refusal.refused_event_id });
      exitCode = 0;
      break;
    }
  }
} finally {
  clearTimeout(timer);
  messages.stop();
  await nc.drain(); // the acks are out before it goes
}
process.exit(exitCode);
