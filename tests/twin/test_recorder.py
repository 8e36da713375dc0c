"""Run-folder writers: live part files, merge on close, same content same bytes."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from twin.recorder import EventWriter, TraceWriter, parts_dir

T0 = datetime(2019, 9, 10, 7, tzinfo=UTC)


def write(path: Path, flush_every: int, steps: int = 50) -> None:
    w = TraceWriter(path, chunk_rows=10_000_000, flush_interval_s=1e9)
    for k in range(steps):
        w.add_many(T0 + timedelta(minutes=k), [("site", "import_kw", k * 1.5, "kW"),
                                               ("CS001/1", "power_kw", k % 7, "kW")])
        if k % flush_every == 0:
            w.flush()
    w.close()


def test_live_reader_sees_flushed_rows_before_close(tmp_path: Path) -> None:
    path = tmp_path / "traces.parquet"
    w = TraceWriter(path, flush_interval_s=0.0)
    w.add(T0, "site", "import_kw", 12.0, "kW")
    w.maybe_flush()
    w.add(T0 + timedelta(minutes=1), "site", "import_kw", 13.0, "kW")  # not yet flushed
    live = ds.dataset(parts_dir(path), format="parquet").to_table().to_pandas()
    assert list(live["value"]) == [12.0]
    assert not path.exists()
    w.close()
    assert not parts_dir(path).exists()
    assert list(pd.read_parquet(path)["value"]) == [12.0, 13.0]


def test_flush_pattern_does_not_change_the_file(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", flush_every=1)
    write(tmp_path / "b.parquet", flush_every=17)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_events_sorted_within_a_step_and_empty_file_valid(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "events.parquet")
    w.sink(T0, "CS002", "b", {"x": 1})
    w.sink(T0, "CS001", "a", {"y": 2})
    w.commit_step()
    w.close()
    events = pd.read_parquet(tmp_path / "events.parquet")
    assert list(events["source"]) == ["CS001", "CS002"]
    empty = TraceWriter(tmp_path / "empty.parquet")
    empty.close()
    assert len(pd.read_parquet(tmp_path / "empty.parquet")) == 0
