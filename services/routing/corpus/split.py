"""Split the routing corpus into its training and held-out parts, the same way every time.

    python services/routing/corpus/split.py SOURCE.jsonl [...]   # writes train.jsonl and heldout.jsonl here

An example goes to the held-out part when the SHA-256 of its id is 3 modulo 4: about a quarter,
chosen by no one, and an example keeps its part when others are added. The held-out part is for
reporting (`xinfang routing evaluate`), never for tuning.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def held_out(example: dict) -> bool:
    return int(hashlib.sha256(example["id"].encode()).hexdigest(), 16) % 4 == 3


def split(examples: list[dict]) -> tuple[list[dict], list[dict]]:
    ordered = sorted(examples, key=lambda e: e["id"])
    return [e for e in ordered if not held_out(e)], [e for e in ordered if held_out(e)]


def main(paths: list[str]) -> None:
    examples = [json.loads(line) for p in paths for line in Path(p).read_text(encoding="utf-8").splitlines() if line]
    ids = [e["id"] for e in examples]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate ids")
    for name, part in zip(("train", "heldout"), split(examples)):
        (HERE / f"{name}.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in part),
                                            encoding="utf-8")
        print(f"{name}.jsonl: {len(part)} examples")


if __name__ == "__main__":
    main(sys.argv[1:])
