"""Built-in filters and the helper for writing new ones."""

from mstudy.filters.base import RowFilter
from mstudy.filters.dedup import ExactDedup
from mstudy.filters.length import LengthFilter

__all__ = ["ExactDedup", "LengthFilter", "RowFilter"]
