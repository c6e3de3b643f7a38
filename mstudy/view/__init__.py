"""``mstudy view``: a local, read-only web page of a study's output or a probe's folder.

:func:`~mstudy.view.outputs.find` works out what a path holds, :mod:`mstudy.view.rows`
reads rows lazily (JSON Lines by line offsets, Parquet by row groups),
:func:`~mstudy.view.app.build_app` is the Starlette app and :func:`~mstudy.view.serve.serve`
runs it with uvicorn on 127.0.0.1. Needs the ``view`` extra (starlette, uvicorn,
matplotlib); importing this package imports none of them.
"""

from __future__ import annotations

__all__: list[str] = []
