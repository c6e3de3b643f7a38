"""The study loop, one stage a module (internal: the public API is :mod:`mstudy.study`).

A record travels top to bottom::

    reading      source items -> Record | Rejection, resumed at a position; outcomes looked up
    rendering    Record -> a Slot with its requests (or render rejections)
    window       Slots in source order; requests in flight by key, each sent once
    (teacher)    requests -> completions, any order
    parsing      completion -> Examples | Rejections, into the Slot
    filtering    a finished Slot's results through the filters, in order
    emitting     counted in the report, handed on in source order
    checkpoints  (journaled runs) position, spools and filter state made durable
    sinking      rows to the sinks, committed together or aborted together

:mod:`mstudy._engine.run` chains them; :mod:`mstudy._engine.journaled` adds the journal.
"""
