"""The packed-mask benchmark runs both attentions in fresh processes and reports what each
holds: sdpa's block mask is [tokens x tokens] booleans, vlaunch's packed sdpa builds none."""

from __future__ import annotations

from bench import packed_mask


def test_sdpa_holds_a_square_mask_and_packed_sdpa_none() -> None:
    rows = packed_mask.measure(lengths=(1024,), repeats=1)
    by = {r["attention"]: r for r in rows}
    assert set(by) == set(packed_mask.ATTENTIONS)
    assert by["sdpa"]["mask_mib"] == 1024 * 1024 / packed_mask.MIB
    assert by["vlaunch_packed_sdpa"]["mask_mib"] == 0
    assert all(r["length"] == 1024 and r["ms"] >= 0 for r in rows)
    table = packed_mask.table(rows)
    assert table.count("\n") == 3 and "vlaunch_packed_sdpa | 1,024" in table
