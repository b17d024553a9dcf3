"""DecodeStats.merge: a corpus decoded batch by batch totals what one run over all of it would count."""

from blockwise import DecodeStats


def test_merge_adds_counts_and_block_sizes():
    first, second = DecodeStats(iterations=2, calls=3), DecodeStats(iterations=4, calls=5)
    first.count_blocks([1, 3])
    second.count_blocks([2, 5, 1, 1])
    total = DecodeStats()
    total.merge(first)
    total.merge(second)
    expected = DecodeStats(iterations=6, calls=8)
    expected.count_blocks([1, 3, 2, 5, 1, 1])
    assert total == expected and total.block_sizes == [0, 3, 1, 1, 0, 1] and total.tokens == 13
    assert second.block_sizes == [0, 2, 1, 0, 0, 1]  # the merged stats are left alone
    first.merge(DecodeStats())  # nothing to add: no longer list either
    assert first.block_sizes == [0, 1, 0, 1] and first.tokens == 4
