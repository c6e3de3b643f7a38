"""Reading: source items as Records or input Rejections, from a resume position on."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from typing import Any

from mstudy.errors import ConfigError
from mstudy.records import Record, Rejection

Item = Record | Rejection


def read_items(
    source: Any,
    *,
    id_field: str,
    limit: int | None = None,
    skip: int = 0,
    skip_last_id: str | None = None,
) -> Iterator[Item]:
    """The source's items, the first ``skip`` left out; those must end with ``skip_last_id``
    (the item a journal last decided), or the source changed and resuming would mix rows."""
    from mstudy.sources import iter_source

    items: Iterator[Item] = iter_source(source, id_field=id_field)
    if limit is not None:
        items = itertools.islice(items, limit)
    if skip:
        skipped = deque(itertools.islice(items, skip), maxlen=1)
        found = _item_id(skipped[0]) if skipped else None
        if found != skip_last_id:
            raise ConfigError(
                f"the source changed since the interrupted run: item {skip} was "
                f"{skip_last_id!r} and is now {found!r}; start over with restart=True "
                "(CLI: --restart)"
            )
    return items


def _item_id(item: Item) -> str:
    return item.id if isinstance(item, Record) else item.source_id
