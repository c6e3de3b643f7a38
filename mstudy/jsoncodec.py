"""JSON encoding without the per-call set-up of :meth:`json.JSONEncoder.encode`.

``JSONEncoder.encode`` builds a new C encoder object on every call, which costs more than
encoding a small row. :func:`reusable` builds it once for an encoder's settings and returns a
function that gives exactly what ``encoder.encode`` gives, except that it does not check for
circular references: a cycle ends in ``RecursionError`` rather than ``ValueError``.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

__all__ = ["reusable"]

_PROBE = {"a": [1, 2.5, None, True, "é\n"], "b": {"z": "d", "c": -0.0}}


def reusable(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """A function encoding as ``encoder.encode`` does, with one C encoder made up front; where
    the C accelerator is missing (or differs), ``encoder.encode`` itself."""
    if encoder.indent is not None:  # the C encoder does not indent
        return encoder.encode
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = (
        json.encoder.encode_basestring_ascii
        if encoder.ensure_ascii
        else json.encoder.encode_basestring
    )
    if make is None:
        return encoder.encode
    try:
        c_encoder = make(
            None,  # markers: no circular-reference check
            encoder.default,
            quote,
            None,  # indent
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )

        def encode(value: Any) -> str:
            return "".join(c_encoder(value, 0))

        if encode(_PROBE) != encoder.encode(_PROBE):
            return encoder.encode
    except Exception:  # another Python's C encoder: the plain path
        return encoder.encode
    return encode
