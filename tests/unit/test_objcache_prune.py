"""The program cache is bounded: entries not used for MAX_AGE_S go, then the
least recently used beyond MAX_ENTRIES, and temporary files a dead save left."""

from __future__ import annotations

import os

from pyprobe.load import cache

NOW = 2_000_000_000.0
DAY = 86400


def entry(where, name: str, age_s: float) -> None:
    path = where / name
    path.write_text("{}")
    os.utime(path, (NOW - age_s, NOW - age_s))


def test_old_entries_and_dead_temporaries_go_the_rest_stay(tmp_path):
    entry(tmp_path, "fresh.json", 1)
    entry(tmp_path, "month.json", 29 * DAY)
    entry(tmp_path, "stale.json", 31 * DAY)
    entry(tmp_path, ".tmp-dead", 2 * 3600)
    entry(tmp_path, ".tmp-saving", 5)  # another process is writing it now
    entry(tmp_path, "notes.txt", 400 * DAY)  # not ours to judge
    assert cache.prune(tmp_path, now=NOW) == [".tmp-dead", "stale.json"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".tmp-saving", "fresh.json", "month.json", "notes.txt"]


def test_beyond_max_entries_the_least_recently_used_go(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    for k in range(5):
        entry(tmp_path, f"e{k}.json", k * 60)  # e0 used last
    assert cache.prune(tmp_path, now=NOW) == ["e3.json", "e4.json"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["e0.json", "e1.json", "e2.json"]
    assert cache.prune(tmp_path, now=NOW) == []  # nothing more to do


def test_compiled_formatters_unused_for_a_month_go_too(tmp_path):
    native = tmp_path / cache.NATIVE
    native.mkdir()
    entry(native, "tcpstates_ndjson-new.so", 1)
    entry(native, "tcpstates_ndjson-old.so", 31 * DAY)  # an earlier source's
    entry(native, ".tcpstates_ndjson-new.so.123", 2 * 3600)  # a build that died
    entry(tmp_path, "fresh.json", 1)
    assert cache.prune(tmp_path, now=NOW) == [
        "native/.tcpstates_ndjson-new.so.123",
        "native/tcpstates_ndjson-old.so",
    ]
    assert [p.name for p in native.iterdir()] == ["tcpstates_ndjson-new.so"]
