"""What the bench sends: valid cases over HTTP and drive rows for the import, spread over the county.

Each case has a resident of its own and a title of its own, so intake's repeat detection finds no
repeats: every case goes the ordinary way (intake → routing → supervision, scoring).
"""
from __future__ import annotations

import random
from functools import lru_cache

from services.simulator.model import resident_id
from shared.directory import Directory, load_directory
from shared.settings import Settings

CHANNELS = ("walk_in", "letter", "phone", "online")
CATEGORIES = ("neighbor_dispute", "wage_arrears", "pollution", "education", "logging_permit", "taxation")


@lru_cache(maxsize=1)
def _places() -> list[tuple[str, str]]:
    directory: Directory = load_directory(Settings().config_dir)
    return [(t.code, v.code) for t in directory.townships.values() for v in t.villages]


def case_body(tag: str, n: int) -> dict:
    """The ``n``-th case of run ``tag``: a walk-in, letter, phone call or online petition."""
    rnd = random.Random(f"{tag}-{n}")
    township, village = _places()[n * 7 % len(_places())]
    return {"channel": CHANNELS[n % len(CHANNELS)],
            "resident": {"name": "王建国", "id_number": resident_id(rnd), "phone": "13812345678"},
            "title": f"压测{tag}第{n}号：村道被占用"[:60],
            "content": f"第{n}号：邻居在村道旁违规搭建棚屋，占用公共通道，影响出行，多次协商未果。",
            "township": township, "village": village, "category": CATEGORIES[n % len(CATEGORIES)]}


def drive_row(tag: str, n: int) -> dict:
    """The ``n``-th row of a drive's file, by column (services/intake/importer.py COLUMNS)."""
    rnd = random.Random(f"{tag}-row-{n}")
    township, village = _places()[n * 7 % len(_places())]
    return {"name": "李秀英", "id_number": resident_id(rnd), "phone": "13900001111", "township": township,
            "village": village, "category": CATEGORIES[n % len(CATEGORIES)],
            "title": f"排查{tag}第{n}号纠纷"[:60], "content": f"排查中发现的第{n}号矛盾纠纷，当事人要求尽快调处。",
            "people_count": 1}
