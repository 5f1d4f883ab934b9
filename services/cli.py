"""``xinfang``: the one command. ``xinfang --help`` lists what it does."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from shared.settings import SERVICES, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xinfang", description="The county letters-and-visits case system.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start NATS (embedded unless XF_NATS_URL is set) and every service")
    up.add_argument("--demo", action="store_true",
                    help="instead: a fresh system in var/demo with a simulated county-year played through it")
    up.add_argument("--cluster", action="store_true",
                    help="production's shape: a 3-node NATS cluster on loopback (ports XF_EMBEDDED_NATS_PORT+0..2), "
                         "streams with 3 replicas, fsync before each ack; PostgreSQL when XF_<SERVICE>_DB_URL say so")

    run = sub.add_parser("run", help="run one service process (several may run as replicas)")
    run.add_argument("service", choices=SERVICES)
    run.add_argument("--port", type=int, help="HTTP port (default: the service's XF_<SERVICE>_PORT)")
    run.add_argument("--host", help="HTTP host (default: XF_HTTP_HOST)")

    mig = sub.add_parser("migrate", help="apply database migrations (services also do this at start)")
    mig.add_argument("service", nargs="*", help="default: every service that exists")

    keys = sub.add_parser("keys", help="the keys of the keyed hashes: init, rotate, show (README, \"Keys\")")
    keys_cmds = keys.add_subparsers(dest="keys_command", required=True)
    keys_init = keys_cmds.add_parser("init", help="generate <data_dir>/secrets/keys.json where keys are missing")
    keys_init.add_argument("--print", action="store_true",
                           help="instead: print fresh keys as XF_ID_HASH_KEY / XF_QUERY_CODE_KEY settings")
    keys_rotate = keys_cmds.add_parser("rotate", help="a new current key in the file; the old ones are kept")
    keys_rotate.add_argument("--kind", choices=["id_hash", "query_code", "all"], default="all")
    keys_cmds.add_parser("show", help="where each key comes from and its ids (never a secret)")

    imp = sub.add_parser("import", help="bulk-import a screening drive's disputes from CSV or XLSX")
    imp.add_argument("file", type=Path)
    imp.add_argument("--drive", required=True, help="the drive id, e.g. D2026-001")
    imp.add_argument("--url", help="intake's base URL (default: from settings)")
    imp.add_argument("--token", help="a clerk's bearer token (default: XF_TOKEN)")
    imp.add_argument("--chunk", type=int, default=500, help="rows per request (default 500)")
    imp.add_argument("--errors", type=Path, help="where to write the bad rows (default FILE.errors.csv)")

    tail = sub.add_parser("tail", help="print the events on a subject as they arrive (e.g. cases.received)")
    tail.add_argument("subject", nargs="?", default="cases.>")
    tail.add_argument("--all", action="store_true", help="replay the stream from its start first")
    tail.add_argument("--creds", type=Path, help="NATS credentials (default XF_NATS_CREDS, else the embedded run's ops.json)")

    nats_config = sub.add_parser("nats-config", help="NATS users and permissions from the directory, for a NATS server")
    nats_config.add_argument("--out", type=Path, help="folder for auth.conf and the users' files "
                                                      "(default <data_dir>/secrets/nats, what `xinfang up` uses)")
    nats_config.add_argument("--tls-ca", type=Path, help="the CA the clients trust, recorded in each user's file")

    from services.units import cli as unit_cli
    unit_cli.add_parser(sub)

    streams = sub.add_parser("streams", help="the JetStream streams: declare them as admin (what `up` does first)")
    streams_cmd = streams.add_subparsers(dest="streams_command", required=True)
    declare = streams_cmd.add_parser("declare", help="create the case and dead-letter streams, or bring them to the "
                                                     "settings (XF_STREAM_REPLICAS, …); only admin may")
    declare.add_argument("--creds", type=Path, help="NATS credentials (default XF_NATS_CREDS, else the embedded "
                                                    "run's admin.json)")

    rec = sub.add_parser("reconcile", help="compare the services' sent outbox rows with the stream; "
                                           "re-publish what the stream lost (README, \"Reconciliation\")")
    rec.add_argument("--since", help="ISO date-time (UTC without a zone) or a duration back from now: 2d, 12h, "
                                     "30m (default: the whole retention, XF_OUTBOX_RETENTION_DAYS)")
    rec.add_argument("--service", action="extend", nargs="+", choices=SERVICES, help="default: every service")
    rec.add_argument("--dry-run", action="store_true", help="only report; exit 1 when something is missing")
    rec.add_argument("--json", action="store_true")
    rec.add_argument("--creds", type=Path, help="NATS credentials (default XF_NATS_CREDS, else the embedded run's admin.json)")

    from services.routing import cli as routing_cli
    routing_cli.add_parser(sub)

    scoring = sub.add_parser("scoring", help="scoring maintenance")
    scoring.add_argument("action", choices=["rebuild"], help="rebuild: drop the projection and replay the stream")

    report = sub.add_parser("report", help="the bureau's report for a period, from the scoring service")
    report.add_argument("--period", required=True, help="2026, 2026-Q3, 2026-05 or 2026-01-01..2026-03-31")
    report.add_argument("--format", choices=["md", "docx", "json", "csv", "xlsx"], default="md",
                        help="md, docx: the annual report (信访工作总结); json, csv, xlsx: the figures")
    report.add_argument("--out", type=Path, help="write here (default: stdout; xlsx needs --out)")
    report.add_argument("--url", help="scoring's base URL (default: from settings)")
    report.add_argument("--token", help="a clerk's, supervisor's or leader's bearer token (default: XF_TOKEN)")

    token = sub.add_parser("token", help="the API's bearer tokens: create, list, revoke (README, \"Roles and tokens\")")
    token_cmds = token.add_subparsers(dest="token_command", required=True)
    create = token_cmds.add_parser("create", help="make a token; it is printed once, on stdout")
    from shared.access import ROLES
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--staff", help="clerk, supervisor: the staff id recorded as the actor")
    create.add_argument("--unit", help="unit: the unit code it acts for")
    create.add_argument("--agent", help="agent: the agent id of the directory")
    create.add_argument("--leader", help="leader: the leader id of the directory")
    create.add_argument("--note", default="", help="who holds it, what for")
    token_list = token_cmds.add_parser("list", help="every token: id, role, what it is bound to (never the secret)")
    token_list.add_argument("--json", action="store_true")
    revoke = token_cmds.add_parser("revoke", help="revoke a token by id; the services refuse it at once")
    revoke.add_argument("id")
    token_cmds.add_parser("roles", help="print the role × route table (Markdown)")

    sim = sub.add_parser("simulate", help="play a county-year through a fresh system, report, and check it")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--scale", type=float, default=1.0, help="multiply the county's volumes")
    sim.add_argument("--days", type=int, default=365, help="days of filing (a shortened year for tests)")
    sim.add_argument("--extra-days", type=int, default=0, help=(
        "days played after the filing days, for cases to finish (0: the report is written at the year's end, "
        "as a bureau writes its annual summary)"))
    sim.add_argument("--keep", type=Path, help="keep the system's data in this folder")

    bench = sub.add_parser("bench", help="measure throughput, latency, rebuild, report and memory against a raw "
                                         "baseline (docs/benchmarks.md)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes, one run (the CI smoke)")
    bench.add_argument("--only", help="SECTION[,SECTION]: raw, http, import, latency, replicas, bulk, rebuild, "
                                      "report, rss (default: all)")
    bench.add_argument("--postgres-url", help="on PostgreSQL, a schema per service (default: SQLite files)")
    bench.add_argument("--runs", type=int, help="runs per figure, the median reported (default 3; --quick 1)")
    bench.add_argument("--out", type=Path, help="the JSON (default var/bench/<timestamp>.json)")
    bench.add_argument("--cases", type=int, help="HTTP cases, import rows, raw messages (default 2000)")
    bench.add_argument("--clients", type=int, help="concurrent HTTP clients (default 16)")
    bench.add_argument("--bulk", help="bulk import sizes, comma-separated (default 10000,100000)")
    bench.add_argument("--rebuild-events", type=int, help="events scoring rebuilds from (default 1000000)")
    bench.add_argument("--report-cases", type=int, help="cases the year's report covers (default 1000000)")

    api = sub.add_parser("openapi", help="print a service's OpenAPI schema")
    api.add_argument("service", choices=SERVICES)

    bus_api = sub.add_parser("asyncapi", help="print the bus's AsyncAPI 3.0.0 document: every subject and payload")
    bus_api.add_argument("--format", choices=["json", "yaml"], default="json")

    args = parser.parse_args(argv)
    settings = Settings()
    from services import runtime
    from shared import natsauth
    from shared.directory import ConfigError, load_directory
    from shared.policy import load_policy
    from shared.rules import load_routing

    if args.command in ("up", "run"):
        try:  # a bad config stops start-up with the file, line and field, not a traceback
            load_routing(settings.config_dir, load_directory(settings.config_dir))
            load_policy(settings.config_dir)
        except ConfigError as exc:
            print(f"bad configuration: {exc}", file=sys.stderr)
            return 2
    if args.command == "up" and args.cluster and args.demo:
        print("--cluster and --demo: one or the other", file=sys.stderr)
        return 2
    if args.command == "up" and args.demo:
        from services.simulator.cli import simulate
        return simulate(settings, 1, 1.0, 365, 0, settings.data_dir / "demo", stay_up=True)
    if args.command == "up":
        return runtime.up(settings, cluster=args.cluster)
    if args.command == "run":
        if args.service not in runtime.APPS:
            print(f"{args.service} does not exist yet", file=sys.stderr)
            return 2
        if (problem := runtime.keys_problem(settings, [args.service])) is not None:
            print(problem, file=sys.stderr)
            return 2
        overrides = {k: v for k, v in {f"{args.service}_port": args.port, "http_host": args.host}.items() if v}
        runtime.run_service(args.service, settings.model_copy(update=overrides))
        return 0
    if args.command == "migrate":
        from shared.db import migrate
        for service in args.service or list(runtime.APPS):
            migrate(service, settings.db_url(service), settings)
            print(f"{service}: at head")
        return 0
    if args.command == "import":
        from services.intake.cli import import_file
        token = args.token or os.environ.get("XF_TOKEN")
        from services.intake.importer import Limits
        return import_file(args.file, args.drive, args.url or settings.base_url("intake"), token, args.chunk,
                           args.errors or args.file.with_name(args.file.name + ".errors.csv"),
                           Limits(settings.import_max_rows, settings.import_max_unzipped_bytes))
    if args.command == "tail":
        import asyncio
        try:
            asyncio.run(tail_events(settings.nats_servers, settings.stream_name, args.subject, args.all,
                                    natsauth.connect_options(settings, natsauth.OPS, args.creds)))
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "unit":  # the unit's own NATS user: --creds, XF_NATS_CREDS, or its file in the data folder
        return unit_cli.run(args, settings.nats_servers, settings.stream_name,
                            natsauth.creds_for(settings, natsauth.unit_user(args.code)),
                            natsauth.connect_options(settings).get("tls"))
    if args.command == "nats-config":
        return nats_config_command(args, settings)
    if args.command == "streams":  # compose's `streams` service and the k8s Job run this before the services
        import asyncio

        from shared.bus import declare_streams
        try:
            asyncio.run(declare_streams(settings, args.creds))
        except Exception as exc:  # noqa: BLE001 - one line for the operator, and a failed Job
            print(f"could not declare the streams: {exc}", file=sys.stderr)
            return 1
        print(f"streams {settings.stream_name} and the dead letters declared ({settings.stream_replicas} "
              f"replica{'s' if settings.stream_replicas > 1 else ''}) at {settings.effective_nats_url}")
        return 0
    if args.command == "reconcile":
        from shared.reconcile import command
        return command(settings, args.since, args.service, args.dry_run, args.json, args.creds)
    if args.command == "routing":
        return routing_cli.run(args, settings)
    if args.command == "scoring":
        from services.scoring.cli import rebuild
        return rebuild(settings)
    if args.command == "report":
        from services.scoring.cli import report
        return report(args.url or settings.base_url("scoring"), args.period, args.format, args.out,
                      args.token or os.environ.get("XF_TOKEN"))
    if args.command == "token":
        return token_command(args, settings)
    if args.command == "keys":
        return keys_command(args, settings)
    if args.command == "simulate":
        from services.simulator.cli import simulate
        return simulate(settings, args.seed, args.scale, args.days, args.extra_days, args.keep)
    if args.command == "bench":
        from bench.run import main as bench
        return bench(args, sys.argv[1:] if argv is None else argv)
    if args.command == "openapi":
        print(json.dumps(runtime.app_factory(args.service)(settings).openapi(), ensure_ascii=False, indent=2))
        return 0
    if args.command == "asyncapi":
        from shared.asyncapi import render
        sys.stdout.write(render(args.format))
        return 0
    return 2


def keys_command(args: argparse.Namespace, settings: Settings) -> int:
    """``xinfang keys init|rotate|show``: the keys file of the data folder (shared/keys.py)."""
    from shared import keys

    try:
        if args.keys_command == "init":
            lines = keys.env_lines() if args.print else keys.init(settings)
        elif args.keys_command == "rotate":
            lines = keys.rotate(settings, list(keys.KINDS) if args.kind == "all" else [args.kind])
        else:
            lines = keys.describe(settings)
    except keys.KeysError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def token_command(args: argparse.Namespace, settings: Settings) -> int:
    """``xinfang token create|list|revoke|roles``: the token store of ``XF_TOKENS_FILE`` (shared/tokens.py)."""
    from shared import access, tokens

    if args.token_command == "roles":
        sys.stdout.write(access.markdown())
        return 0
    if args.token_command == "create":
        try:
            record, secret = tokens.create(settings, args.role, staff_id=args.staff, unit=args.unit,
                                           agent_id=args.agent, leader_id=args.leader, note=args.note)
        except tokens.TokenError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        print(f"token {record.id}: {record.principal.describe()}; shown once, keep it now "
              f"(stored hashed in {tokens.store_path(settings)})", file=sys.stderr)
        print(secret, flush=True)
        return 0
    if args.token_command == "revoke":
        try:
            record = tokens.revoke(settings, args.id)
        except tokens.TokenError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        print(f"token {record.id} ({record.principal.describe()}) revoked at {record.revoked_at}")
        return 0
    records = tokens.listed(settings)
    if args.json:
        print(json.dumps([{k: v for k, v in r.to_json().items() if k != "sha256"} for r in records],
                         ensure_ascii=False, indent=1))
        return 0
    for r in records:
        state = f"revoked {r.revoked_at}" if r.revoked_at else "active"
        print(f"{r.id}  {r.principal.describe():<40}  created {r.created_at}  {state}  {r.note}")
    if not records:
        print(f"no tokens in {tokens.store_path(settings)}", file=sys.stderr)
    return 0


async def tail_events(url: str | list[str], stream: str, subject: str, replay: bool, options: dict | None = None) -> None:
    """Every stored event on ``subject`` once, in order, new ones as they come: read from the stream by
    sequence (``STREAM.MSG.GET``, next message on the subject), woken by a subscription to it. No
    consumer: the ``ops`` user may read but not create one (shared/natsauth.py)."""
    import asyncio

    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, name="xinfang-tail", **(options or {}))
    js = nc.jetstream()
    seq = 1 if replay else (await js.stream_info(stream)).state.last_seq + 1
    wake = asyncio.Event()

    async def woken(_msg) -> None:  # noqa: ANN001
        wake.set()
    await nc.subscribe(subject, cb=woken)
    shown = ",".join(url) if isinstance(url, list) else url
    print(f"listening on {subject} at {shown} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        while True:
            wake.clear()
            try:
                msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
            except NotFoundError:  # nothing more stored yet: wait for news (or look again in a while)
                try:
                    await asyncio.wait_for(wake.wait(), timeout=2.0)
                except asyncio.TimeoutError:
                    pass
                continue
            print(f"{msg.subject} {msg.data.decode()}", flush=True)
            seq = msg.seq + 1
    finally:
        await nc.close()


def nats_config_command(args: argparse.Namespace, settings: Settings) -> int:
    """``xinfang nats-config``: the users of the directory, their permissions and credentials."""
    from shared import natsauth
    from shared.directory import ConfigError

    out = args.out or natsauth.creds_dir(settings)
    try:
        lines = natsauth.generate(settings, out, args.tls_ca)
    except (ConfigError, ValueError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    for line in lines or [f"NATS users unchanged; {out} is up to date"]:
        print(line)
    print(f"""
Copy {Path(out) / natsauth.AUTH_CONF} beside the NATS server's configuration file and add to it
    include "auth.conf"
(nats-server reads an include relative to the including file's folder, never an absolute path; see
deploy/nats/nats.conf), then reload it after each change of the directory (`nats-server --signal
reload`). The server then refuses anonymous connections. Give each process its own file (XF_NATS_CREDS):
    services: svc_intake.json, svc_routing.json, svc_supervision.json, svc_scoring.json
    streams (create/update, `xinfang up`): admin.json       xinfang tail: ops.json
    each department: its unit_<code>.json, used with its inbox_prefix (README, "NATS users")""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
