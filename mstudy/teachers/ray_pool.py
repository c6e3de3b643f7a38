"""``ray``: a teacher run as a pool of Ray actors, one replica per GPU (or CPU slot).

The study's loop stays on the driver (reading, rendering, the call cache and journal, the
stream-level filters, sinks, progress and report): it is the part that makes the run exactly
once and in source order, and it costs microseconds a row. The teacher is where the hours go,
so that is what is spread: each actor builds its own teacher from a spec (a plugin name, a
config table, or a factory), so a model is loaded once per actor on the actor's GPU, never
pickled from the driver. Requests go to the actors in batches of ``batch_size``,
``in_flight`` batches per actor at most, to the least-loaded actor; completions come back as
each batch finishes.

The pool also parses (:class:`~mstudy.interfaces.ParsesReplies`): a study binds its strategies
and leading per-record filters to it once a run (pickled once, fetched once by each actor,
again by an actor Ray restarted), and each actor parses its replies and checks them with
those filters, so the driver receives parse results and verdicts instead of parsing
(:mod:`mstudy.offload`). Strategies or filters that cannot be pickled, or that an actor cannot
load, leave the parsing on the driver (logged).

Faults: an actor whose process dies is restarted by Ray (``max_restarts``) and the batch it
held is given to the pool again (``max_resubmits`` times, then its requests end as error
completions with the reason). Completions already received were stored by the study, so a
dead actor costs only the calls it had in flight. A teacher that fails as a whole
(:class:`~mstudy.errors.TeacherError` in an actor) stops the run with that error.

The pool's fingerprint is its teacher's (asked of the actors, which must agree): a run on Ray
and a run in one process share their call cache and give the same rows.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mstudy.errors import ConfigError, TeacherError
from mstudy.interfaces import Filter, Strategy
from mstudy.offload import Parsed, ParseJob, run_job
from mstudy.records import Completion, Request

__all__ = ["Binding", "RayTeacher", "build_teacher"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

TeacherSpec = str | Mapping[str, Any] | Callable[[], Any]
"""A plugin name, a config table (``{"name": ..., **params}``) or a zero-argument factory."""


def build_teacher(spec: TeacherSpec) -> Any:
    """The teacher a spec describes, built here (in an actor)."""
    from mstudy import plugins

    if isinstance(spec, str):
        return plugins.create("teachers", spec)
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError("a teacher table needs a name", parameter="name")
        return plugins.create("teachers", name, **params)
    return spec()


BINDINGS_KEPT = 8
"""Parse bindings an actor keeps loaded (one per run; a chain's stages each have one)."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A run's strategies and filters, stored once in the cluster; ``ref`` sits in a list so
    Ray hands the reference to the actor, not the value (fetched once per actor)."""

    id: str
    ref: list[Any]


class _TeacherActor:
    """One replica: a teacher built in the actor's process."""

    def __init__(self, spec: TeacherSpec) -> None:
        self.teacher = build_teacher(spec)
        self.bound: OrderedDict[str, tuple[list[Strategy], list[Filter]]] = OrderedDict()

    def bind(self, binding_id: str, ref: list[Any]) -> int:
        """Load a binding's strategies and filters; their count (so the driver knows that
        this process can unpickle them)."""
        strategies, filters = self._bound(binding_id, ref)
        return len(strategies) + len(filters)

    def _bound(self, binding_id: str, ref: list[Any]) -> tuple[list[Strategy], list[Filter]]:
        found = self.bound.get(binding_id)
        if found is None:
            import ray

            found = self.bound[binding_id] = ray.get(ref[0])
            while len(self.bound) > BINDINGS_KEPT:
                self.bound.popitem(last=False)
        return found

    def generate_parsed(
        self, binding_id: str, ref: list[Any], jobs: list[ParseJob]
    ) -> list[Parsed]:
        """Ask the teacher, then parse each reply and check it with the binding's filters."""
        strategies, filters = self._bound(binding_id, ref)
        by_key = {job.request.key: job for job in jobs}
        out = []
        for completion in self.teacher.generate([job.request for job in jobs]):
            job = by_key.get(completion.key)
            if job is None:  # not asked for: the driver says so
                out.append(Parsed(completion))
            else:
                out.append(run_job(job, completion, strategies, filters))
        return out

    def describe(self) -> dict[str, Any]:
        from mstudy.interfaces import SchemaConstrained

        teacher = self.teacher
        return {
            "fingerprint": teacher.fingerprint,
            "name": teacher.name,
            "pid": os.getpid(),
            "constrains_schema": isinstance(teacher, SchemaConstrained)
            and bool(teacher.constrains_schema),
        }

    def generate(self, requests: list[Request]) -> list[Completion]:
        return list(self.teacher.generate(requests))


class RayTeacher:
    """A teacher spread over ``replicas`` Ray actors.

    Args:
        teacher: what each actor builds: a plugin name (``"transformers"``), a config table
            (``{"name": "vllm", "model": ...}``) or a zero-argument factory. Not a built
            teacher object: a model is loaded in each actor, not shipped from the driver.
        replicas: how many actors.
        num_cpus, num_gpus: resources each actor reserves (``num_gpus=1``: one GPU each).
        batch_size: requests per call to an actor (a local model batches them; a remote
            client runs them concurrently).
        in_flight: batches queued per actor, so that none waits between batches.
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``host:port``);
            ``None`` joins the one this process already initialised, or starts a local one.
        max_restarts: how many times Ray restarts a dead actor.
        max_resubmits: how many times one batch is given to the pool again after its actor
            died.
        runtime_env: Ray's runtime environment for the actors (``env_vars``, ``pip``, ...).
        parse_in_actors: parse replies and apply the per-record filters in the actors
            (:class:`~mstudy.interfaces.ParsesReplies`); False leaves them to the driver.
    """

    name = "ray"

    def __init__(
        self,
        teacher: TeacherSpec,
        *,
        replicas: int = 1,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        batch_size: int = 8,
        in_flight: int = 2,
        address: str | None = None,
        max_restarts: int = 3,
        max_resubmits: int = 3,
        runtime_env: Mapping[str, Any] | None = None,
        parse_in_actors: bool = True,
    ) -> None:
        if not isinstance(teacher, (str, Mapping)) and not _is_factory(teacher):
            raise ConfigError(
                "RayTeacher takes a teacher plugin name, a config table or a factory, so that "
                f"each actor builds its own; got a {type(teacher).__name__} object",
                parameter="teacher",
            )
        for name, value in (
            ("replicas", replicas),
            ("batch_size", batch_size),
            ("in_flight", in_flight),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}", parameter=name)
        self.spec = teacher
        self.replicas = replicas
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.batch_size = batch_size
        self.in_flight = in_flight
        self.address = address
        self.max_restarts = max_restarts
        self.max_resubmits = max_resubmits
        self.runtime_env = dict(runtime_env or {})
        if not isinstance(parse_in_actors, bool):
            raise ConfigError(
                f"parse_in_actors must be true or false, got {parse_in_actors!r}",
                parameter="parse_in_actors",
            )
        self.parse_in_actors = parse_in_actors
        self._actors: list[Any] = []
        self._described: list[dict[str, Any]] = []
        self.stats = {"batches": 0, "resubmitted": 0, "actor_deaths": 0}

    def __repr__(self) -> str:
        spec = self.spec if isinstance(self.spec, str) else type(self.spec).__name__
        return f"RayTeacher({spec!r}, replicas={self.replicas}, num_gpus={self.num_gpus})"

    # -- the pool -------------------------------------------------------------------------
    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise TeacherError("the ray teacher needs Ray: pip install 'mstudy[ray]'") from None
        return ray

    def _start(self) -> list[Any]:
        if self._actors:
            return self._actors
        ray = self._ray()
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                ignore_reinit_error=True,
                logging_level=logging.WARNING,
            )
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_restarts": self.max_restarts,
            "max_task_retries": 0,  # a dead actor's batch is resubmitted here, counted
        }
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        actor_class = ray.remote(_TeacherActor).options(**options)
        actors = [actor_class.remote(self.spec) for _ in range(self.replicas)]
        try:
            described = ray.get([actor.describe.remote() for actor in actors])
        except Exception as exc:
            for actor in actors:
                ray.kill(actor)
            raise TeacherError(
                f"ray teacher: the actors could not build their teacher: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        prints = {d["fingerprint"] for d in described}
        if len(prints) != 1:
            for actor in actors:
                ray.kill(actor)
            raise TeacherError(
                f"ray teacher: the actors built teachers with different fingerprints {prints}; "
                "a pool needs one model and one set of settings"
            )
        self._actors, self._described = actors, described
        return actors

    @property
    def fingerprint(self) -> str:
        """The actors' teacher's fingerprint (the pool itself changes no output)."""
        self._start()
        return str(self._described[0]["fingerprint"])

    @property
    def constrains_schema(self) -> bool:
        self._start()
        return bool(self._described[0]["constrains_schema"])

    def actor_pids(self, timeout: float = 60.0) -> list[int]:
        """The process id of each actor now (after restarts, the new ones); waits up to
        ``timeout`` seconds for an actor that is restarting."""
        ray = self._ray()
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + timeout
        while True:
            try:
                found = ray.get([a.describe.remote() for a in self._start()])
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            return [int(d["pid"]) for d in found]

    def close(self) -> None:
        """Stop the actors (the cluster stays)."""
        if self._actors:
            ray = self._ray()
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []

    def __enter__(self) -> RayTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generate -------------------------------------------------------------------------
    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Batches to the least-loaded actor; completions as each batch finishes."""
        return self._dispatch(
            requests,
            lambda actor, batch: actor.generate.remote(batch),
            lambda request, reason: _error(request, reason, self.fingerprint),
        )

    # -- parsing in the actors (mstudy.interfaces.ParsesReplies) ----------------------------
    def bind_parsing(
        self, strategies: Sequence[Strategy], filters: Sequence[Filter]
    ) -> Binding | None:
        """Store ``strategies`` and ``filters`` in the cluster and have every actor load
        them; None (the driver parses) when they cannot be pickled or loaded, or with
        ``parse_in_actors`` off."""
        if not self.parse_in_actors:
            return None
        ray = self._ray()
        actors = self._start()
        try:
            ref = ray.put((list(strategies), list(filters)))
        except Exception as exc:  # a component that does not pickle (a lock, a connection)
            logger.info("ray teacher: parsing stays on the driver: %s: %s", type(exc).__name__, exc)
            return None
        binding = Binding(uuid.uuid4().hex, [ref])
        try:
            ray.get([actor.bind.remote(binding.id, binding.ref) for actor in actors])
        except Exception as exc:  # a class the workers cannot import, say
            cause = getattr(exc, "cause", None) or exc
            logger.warning(
                "ray teacher: the actors cannot load the strategies and filters, so parsing "
                "stays on the driver: %s: %s",
                type(cause).__name__,
                cause,
            )
            return None
        return binding

    def generate_parsed(self, jobs: Iterable[ParseJob], binding: Binding) -> Iterator[Parsed]:
        """``generate`` for jobs: each reply comes back parsed and checked by its actor."""
        return self._dispatch(
            jobs,
            lambda actor, batch: actor.generate_parsed.remote(binding.id, binding.ref, batch),
            lambda job, reason: Parsed(_error(job.request, reason, self.fingerprint)),
        )

    def _dispatch(
        self,
        items: Iterable[_T],
        call: Callable[[Any, list[_T]], Any],
        failed: Callable[[_T, str], _R],
    ) -> Iterator[_R]:
        """Batches of ``items`` to the least-loaded actor (``call(actor, batch)``); the
        results as each batch finishes; ``failed(item, reason)`` for a batch whose actors
        kept dying."""
        ray = self._ray()
        from ray.exceptions import RayActorError

        actors = self._start()
        load = [0] * len(actors)
        pending: dict[Any, tuple[int, list[_T], int]] = {}
        source = iter(items)
        exhausted = False

        def submit(batch: list[_T], attempt: int, avoid: int | None = None) -> None:
            """To the least-loaded actor; a dead actor's batch to another one, if any."""
            choices = [i for i in range(len(actors)) if i != avoid] or list(range(len(actors)))
            index = min(choices, key=load.__getitem__)
            pending[call(actors[index], batch)] = (index, batch, attempt)
            load[index] += 1
            self.stats["batches"] += 1

        while True:
            while not exhausted and len(pending) < len(actors) * self.in_flight:
                batch = list(itertools.islice(source, self.batch_size))
                if not batch:
                    exhausted = True
                    break
                submit(batch, 0)
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                index, batch, attempt = pending.pop(ref)
                load[index] -= 1
                try:
                    results = ray.get(ref)
                except RayActorError as exc:
                    self.stats["actor_deaths"] += 1
                    if attempt < self.max_resubmits:
                        logger.warning("ray teacher: an actor died; its batch goes to the pool")
                        self.stats["resubmitted"] += 1
                        submit(batch, attempt + 1, avoid=index)
                        continue
                    reason = f"ray actor died {attempt + 1} times: {type(exc).__name__}"
                    yield from (failed(item, reason) for item in batch)
                    continue
                except Exception as exc:
                    cause = getattr(exc, "cause", None) or exc
                    raise TeacherError(
                        f"ray teacher: the teacher failed in its actor: "
                        f"{type(cause).__name__}: {cause}"
                    ) from exc
                yield from results


def _error(request: Request, reason: str, teacher: str) -> Completion:
    return Completion(
        key=request.key, text="", finish_reason="error", teacher=teacher, error=reason
    )


def _is_factory(value: object) -> bool:
    return callable(value) and not hasattr(value, "generate")
