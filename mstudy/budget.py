"""Cost control: a token or money budget for a run, and a dry-run estimate before it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mstudy.records import Request


@dataclass(frozen=True, slots=True)
class Budget:
    """Stop a run cleanly once it has spent this much (cached calls cost nothing).

    Prices are per million tokens, prompt and completion; ``max_cost`` needs at least one.
    ``price_factor`` scales them (a study sets it from a teacher that declares
    :class:`~mstudy.interfaces.Discounted`, such as the batch teacher's 0.5).
    """

    max_tokens: int | None = None
    max_cost: float | None = None
    price_in: float = 0.0
    price_out: float = 0.0
    price_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.max_cost is not None and not (self.price_in or self.price_out):
            raise ValueError("max_cost needs prices: price_in and/or price_out per 1M tokens")
        if not 0 < self.price_factor <= 1:
            raise ValueError(f"price_factor must be in (0, 1], got {self.price_factor!r}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        listed = prompt_tokens * self.price_in + completion_tokens * self.price_out
        return listed * self.price_factor / 1e6

    def exceeded(self, prompt_tokens: int, completion_tokens: int) -> str | None:
        """Why the budget is spent, or None while it is not."""
        used = prompt_tokens + completion_tokens
        if self.max_tokens is not None and used >= self.max_tokens:
            return f"token budget reached: {used} of {self.max_tokens} tokens spent"
        spent = self.cost(prompt_tokens, completion_tokens)
        if self.max_cost is not None and spent >= self.max_cost:
            return f"cost budget reached: {spent:.4f} of {self.max_cost:.4f} spent"
        return None


@dataclass
class Estimate:
    """What a run would ask of the teacher, before any call is made."""

    records: int = 0
    rejected_inputs: int = 0
    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int = 0
    tokens_counted_by: str = "characters / 4"
    per_strategy: dict[str, int] = field(default_factory=dict)
    budget: Budget | None = None

    @property
    def max_cost(self) -> float | None:
        if self.budget is None or not (self.budget.price_in or self.budget.price_out):
            return None
        return self.budget.cost(self.prompt_tokens, self.max_completion_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "rejected_inputs": self.rejected_inputs,
            "requests": self.requests,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "tokens_counted_by": self.tokens_counted_by,
            "per_strategy": dict(self.per_strategy),
            "max_cost": self.max_cost,
        }

    def __str__(self) -> str:
        lines = [
            f"dry run: {self.records} records ({self.rejected_inputs} unusable), "
            f"{self.requests} teacher requests ({self.cached} already cached)",
            f"  prompt tokens:          {self.prompt_tokens:>12,}  ({self.tokens_counted_by})",
            f"  completion tokens, max: {self.max_completion_tokens:>12,}",
        ]
        lines += [f"  {name}: {n} requests" for name, n in self.per_strategy.items()]
        if self.max_cost is not None:
            lines.append(f"  cost, at most:          {self.max_cost:>12,.4f}")
        return "\n".join(lines)


def count_prompt_tokens(
    requests: Iterable[Request], counter: Callable[[Request], int] | None
) -> int:
    """Prompt tokens of ``requests``, by ``counter`` (a teacher's ``count_prompt_tokens``) or
    the characters / 4 rule of thumb."""
    total = 0
    for request in requests:
        if counter is not None:
            total += counter(request)
        else:
            text = "".join(m.content for m in request.messages) + (request.prefill or "")
            total += max(1, len(text) // 4)
    return total


__all__ = ["Budget", "Estimate", "count_prompt_tokens"]
