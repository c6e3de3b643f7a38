"""IdentityMemo: a value is reused for the very same objects, and only for them."""

from __future__ import annotations

from mstudy.identity import IdentityMemo


def test_values_are_found_by_the_identity_of_the_objects() -> None:
    calls: list[tuple[str, ...]] = []

    def count(words: tuple[str, ...]) -> int:
        calls.append(words)
        return sum(map(len, words))

    memo = IdentityMemo(count, by_items=True)
    first, second = "alpha" * 3, "beta" * 2
    assert memo((first, second)) == 23
    assert memo((first, second)) == 23  # a new tuple of the same objects
    assert len(calls) == 1
    twin = "".join(["alpha"] * 3)  # equal text, another object: computed again
    assert twin == first and twin is not first
    assert memo((twin, second)) == 23 and len(calls) == 2


def test_one_object_keys_and_the_bound_on_kept_entries() -> None:
    computed: list[int] = []

    def size(items: tuple[int, ...]) -> int:
        computed.append(len(items))
        return len(items)

    memo = IdentityMemo(size, size=2)
    one, two, three = (1,), (1, 2), (1, 2, 3)
    assert [memo(one), memo(two), memo(one)] == [1, 2, 1]
    assert computed == [1, 2]  # the second look at ``one`` found it
    assert memo(three) == 3  # two were kept, the most it keeps: they were dropped for it
    assert memo(one) == 1 and computed == [1, 2, 3, 1]
