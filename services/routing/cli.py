"""``xinfang routing evaluate FILE``, ``xinfang routing fit`` and ``xinfang routing retrain``."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from shared.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    routing = sub.add_parser("routing", help="routing's classifier: evaluate it on labelled examples, retrain it")
    cmds = routing.add_subparsers(dest="routing_command", required=True)
    evaluate = cmds.add_parser("evaluate", help="routing's decision over labelled examples (JSONL) filed without a "
                                                "category: accuracy of the lead unit, triage, misroutes, calibration")
    evaluate.add_argument("file", type=Path, help="JSONL: id, title, content, township, category, accused_unit")
    evaluate.add_argument("--json", type=Path, help="also write the figures here as JSON")
    evaluate.add_argument("--cv", type=int, default=0, metavar="K",
                          help="cross-validate: each of K folds by a model of the file's other folds only")
    cmds.add_parser("fit", help="fit the shipped corpus's calibration and record it (corpus/fitted.json), so that "
                                "routing starts without fitting it; run it after changing the corpus or keywords")
    retrain = cmds.add_parser("retrain", help="rebuild the examples the classifier learns from (the clerks' triage "
                                              "decisions, approved objections) from the stream")
    retrain.add_argument("--creds", type=Path, help="NATS credentials that may read the stream (default "
                                                    "XF_NATS_CREDS, else the embedded run's ops.json)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.routing_command == "evaluate":
        from services.routing import evaluate

        if not args.file.is_file():
            print(f"no such file: {args.file}", file=sys.stderr)
            return 2
        if args.cv == 1 or args.cv < 0:
            print("--cv needs at least 2 folds", file=sys.stderr)
            return 2
        result = evaluate.run(settings, args.file, args.cv)
        sys.stdout.write(evaluate.render(result))
        if args.json:
            args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            print(f"written to {args.json}")
        return 0
    if args.routing_command == "fit":
        from services.routing import classifier
        from shared.directory import load_directory

        with classifier._FITTED_LOCK:
            classifier._FITTED.clear()
        fitted = classifier.Classifier(load_directory(settings.config_dir), settings.data_dir / "cache" / "jieba",
                                       fitted=None)
        record = classifier.record_fit(fitted)
        print(f"{classifier.FITTED}: {record['examples']} examples, temperature {record['beta']}, "
              f"accusation temperature {record['accusation_beta']}")
        return 0
    result = asyncio.run(retrain(settings, args.creds))
    print(f"read {result['events']} events of the stream: {result['examples']} examples "
          f"({result['triage']} triage decisions, {result['objection']} after approved objections); "
          f"the model learns from {result['teaching']} (one per case); fingerprint {result['fingerprint']}")
    return 0


async def retrain(settings: Settings, creds: Path | None = None) -> dict:
    """Replay the stream (stored messages by sequence: what the ``ops`` user may read) through
    :class:`services.routing.learning.Replay`, skipping what the live consumer refuses, and replace
    the examples table: every replica reloads, and learns what the live consumer had recorded."""
    import nats
    from nats.js.errors import NotFoundError

    from services.routing import learning
    from shared import events as ev
    from shared import natsauth, verdict
    from shared.db import make_engine, migrate
    from shared.directory import load_directory
    from shared.rules import load_routing

    directory = load_directory(settings.config_dir)
    replay = learning.Replay()
    nc = await nats.connect(settings.nats_servers, name="routing-retrain",
                            **natsauth.connect_options(settings, natsauth.OPS, creds))
    events = 0
    try:
        js = nc.jetstream()
        last = (await js.stream_info(settings.stream_name)).state.last_seq
        seq = 1
        while seq <= last:
            try:
                msg = await js.get_msg(settings.stream_name, seq=seq, subject="cases.>", next=True)
            except NotFoundError:
                break
            seq = msg.seq + 1
            try:
                event = ev.decode(msg.data)
            except ev.UndecodableEvent:
                continue  # dead-lettered by the live consumer
            if verdict.before_apply(msg.subject, event, directory) is None:
                events += 1
                replay.apply(event)
    finally:
        await nc.close()
    url = settings.db_url("routing")
    migrate("routing", url, settings)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            learning.replace_all(conn, replay.rows)
    finally:
        engine.dispose()
    teaching = learning.teaching(replay.rows, load_routing(settings.config_dir, directory), directory)
    sources = [r["source"] for r in replay.rows]
    return {"events": events, "examples": len(replay.rows), "triage": sources.count("triage"),
            "objection": sources.count("objection"), "teaching": len(teaching),
            "fingerprint": learning.fingerprint(teaching)}
