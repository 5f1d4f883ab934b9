"""``xinfang``: the one command. ``xinfang --help`` lists what it does."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.settings import SERVICES, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xinfang", description="The county letters-and-visits case system.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start NATS (embedded unless XF_NATS_URL is set) and every service")
    up.add_argument("--demo", action="store_true",
                    help="instead: a fresh system in var/demo with a simulated county-year played through it")

    run = sub.add_parser("run", help="run one service process (several may run as replicas)")
    run.add_argument("service", choices=SERVICES)
    run.add_argument("--port", type=int, help="HTTP port (default: the service's XF_<SERVICE>_PORT)")
    run.add_argument("--host", help="HTTP host (default: XF_HTTP_HOST)")

    mig = sub.add_parser("migrate", help="apply database migrations (services also do this at start)")
    mig.add_argument("service", nargs="*", help="default: every service that exists")

    imp = sub.add_parser("import", help="bulk-import a screening drive's disputes from CSV or XLSX")
    imp.add_argument("file", type=Path)
    imp.add_argument("--drive", required=True, help="the drive id, e.g. D2026-001")
    imp.add_argument("--url", help="intake's base URL (default: from settings)")
    imp.add_argument("--token", help="clerk bearer token (default: XF_CLERK_TOKEN)")
    imp.add_argument("--chunk", type=int, default=500, help="rows per request (default 500)")
    imp.add_argument("--errors", type=Path, help="where to write the bad rows (default FILE.errors.csv)")

    tail = sub.add_parser("tail", help="print the events on a subject as they arrive (e.g. cases.received)")
    tail.add_argument("subject", nargs="?", default="cases.>")
    tail.add_argument("--all", action="store_true", help="replay the stream from its start first")

    from services.units import cli as unit_cli
    unit_cli.add_parser(sub)

    scoring = sub.add_parser("scoring", help="scoring maintenance")
    scoring.add_argument("action", choices=["rebuild"], help="rebuild: drop the projection and replay the stream")

    report = sub.add_parser("report", help="the bureau's report for a period, from the scoring service")
    report.add_argument("--period", required=True, help="2026, 2026-Q3, 2026-05 or 2026-01-01..2026-03-31")
    report.add_argument("--format", choices=["md", "json", "csv", "xlsx"], default="md")
    report.add_argument("--out", type=Path, help="write here (default: stdout; xlsx needs --out)")
    report.add_argument("--url", help="scoring's base URL (default: from settings)")

    sim = sub.add_parser("simulate", help="play a county-year through a fresh system, report, and check it")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--scale", type=float, default=1.0, help="multiply the county's volumes")
    sim.add_argument("--days", type=int, default=365, help="days of filing (a shortened year for tests)")
    sim.add_argument("--extra-days", type=int, default=60, help="days after, for cases to finish")
    sim.add_argument("--keep", type=Path, help="keep the system's data in this folder")

    api = sub.add_parser("openapi", help="print a service's OpenAPI schema")
    api.add_argument("service", choices=SERVICES)

    bus_api = sub.add_parser("asyncapi", help="print the bus's AsyncAPI 3.0.0 document: every subject and payload")
    bus_api.add_argument("--format", choices=["json", "yaml"], default="json")

    args = parser.parse_args(argv)
    settings = Settings()
    from services import runtime
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
    if args.command == "up" and args.demo:
        from services.simulator.cli import simulate
        return simulate(settings, 1, 1.0, 365, 60, settings.data_dir / "demo", stay_up=True)
    if args.command == "up":
        return runtime.up(settings)
    if args.command == "run":
        if args.service not in runtime.APPS:
            print(f"{args.service} does not exist yet", file=sys.stderr)
            return 2
        overrides = {k: v for k, v in {f"{args.service}_port": args.port, "http_host": args.host}.items() if v}
        runtime.run_service(args.service, settings.model_copy(update=overrides))
        return 0
    if args.command == "migrate":
        from shared.db import migrate
        for service in args.service or list(runtime.APPS):
            migrate(service, settings.db_url(service))
            print(f"{service}: at head")
        return 0
    if args.command == "import":
        from services.intake.cli import import_file
        token = args.token or (settings.clerk_token.get_secret_value() if settings.clerk_token else None)
        return import_file(args.file, args.drive, args.url or settings.base_url("intake"), token, args.chunk,
                           args.errors or args.file.with_name(args.file.name + ".errors.csv"))
    if args.command == "tail":
        import asyncio
        try:
            asyncio.run(tail_events(settings.effective_nats_url, settings.stream_name, args.subject, args.all))
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "unit":
        return unit_cli.run(args, settings.effective_nats_url, settings.stream_name)
    if args.command == "scoring":
        from services.scoring.cli import rebuild
        return rebuild(settings)
    if args.command == "report":
        from services.scoring.cli import report
        return report(args.url or settings.base_url("scoring"), args.period, args.format, args.out)
    if args.command == "simulate":
        from services.simulator.cli import simulate
        return simulate(settings, args.seed, args.scale, args.days, args.extra_days, args.keep)
    if args.command == "openapi":
        print(json.dumps(runtime.app_factory(args.service)(settings).openapi(), ensure_ascii=False, indent=2))
        return 0
    if args.command == "asyncapi":
        from shared.asyncapi import render
        sys.stdout.write(render(args.format))
        return 0
    return 2


async def tail_events(url: str, stream: str, subject: str, replay: bool) -> None:
    """An ordered JetStream consumer: every stored event once, in order, new ones as they come."""
    import nats
    from nats.js.api import DeliverPolicy

    nc = await nats.connect(url)
    sub = await nc.jetstream().subscribe(subject, stream=stream, ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL if replay else DeliverPolicy.NEW)
    print(f"listening on {subject} at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    async for msg in sub.messages:
        print(f"{msg.subject} {msg.data.decode()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
