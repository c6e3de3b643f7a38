"""Built-in strategies and the helper for writing new ones."""

from mstudy.strategies.base import Reject, TemplateStrategy
from mstudy.strategies.cot import ChainOfThought
from mstudy.strategies.explain import Explain
from mstudy.strategies.paraphrase import Paraphrase
from mstudy.strategies.reverse import Reverse

__all__ = ["ChainOfThought", "Explain", "Paraphrase", "Reject", "Reverse", "TemplateStrategy"]
