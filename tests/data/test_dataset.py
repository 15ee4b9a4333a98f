"""Dataset contract: loading, normalisation and how refusals locate the row.

The table of refused inputs (each naming file, column, row and what was expected) and the documented
recoveries is tests/reliability/test_bad_input.py.
"""

from __future__ import annotations

import pickle
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage.data.dataset import DatasetError, data_fingerprint, load_dataset

ITEMS_CSV = "item_id,title,text\nA,Alpha,first item\nB,Beta,\nC,Gamma,third\n"
INTER_CSV = ("context_id,item_id,weight,timestamp\n"
             "u1,A,1.0,100\nu1,B,2.5,200\nu2,C,1,300\nu2,A,3,400\n")


def write(root, name, content):
    root.mkdir(parents=True, exist_ok=True)
    p = root / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def make(tmp_path, items=ITEMS_CSV, inter=INTER_CSV, items_name="items.csv",
         inter_name="interactions.csv"):
    root = tmp_path / "ds"
    write(root, items_name, items)
    write(root, inter_name, inter)
    return root


def refuse(root, **kw) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_dataset(root, **kw)
    return info.value


def check(err, file, column, row):
    assert err.file == file and err.column == column and err.row == row, str(err)
    text = str(err)
    assert text.startswith(file)
    if column is not None:
        assert f"column '{column}'" in text
    if row is not None:
        assert f"row {row}" in text


# ---------------------------------------------------------------------------------------------
# good input

def test_good_csv_dataset_loads(tmp_path):
    ds = load_dataset(make(tmp_path))
    assert list(ds.items.columns) == ["item_id", "title", "text", "image_path"]
    assert ds.items["item_id"].tolist() == ["A", "B", "C"]
    assert ds.items["text"].tolist() == ["first item", "", "third"]
    assert ds.items["image_path"].tolist() == ["", "", ""]
    inter = ds.interactions
    assert list(inter.columns) == ["context_id", "item_id", "weight", "timestamp", "row"]
    assert inter["weight"].dtype == np.float64 and inter["weight"].tolist() == [1.0, 2.5, 1.0, 3.0]
    assert inter["timestamp"].dtype == np.int64
    assert inter["timestamp"].tolist() == [100, 200, 300, 400]
    assert inter["row"].dtype == np.int64 and inter["row"].tolist() == [0, 1, 2, 3]
    assert ds.has_timestamps
    assert ds.items_file.name == "items.csv" and ds.interactions_file.name == "interactions.csv"
    idx = ds.item_index()
    assert idx.get_indexer(["C", "A", "B"]).tolist() == [2, 0, 1]


def test_optional_columns_absent_get_defaults_and_ids_are_stripped_strings(tmp_path):
    root = make(tmp_path, items="item_id,extra\n 007 ,x\n10,y\n",
                inter="context_id,item_id\n 01 ,007\n01,10 \n")
    ds = load_dataset(root)
    assert ds.items["item_id"].tolist() == ["007", "10"]  # leading zeros kept: ids are text
    assert ds.items["title"].tolist() == ["", ""] and "extra" not in ds.items.columns
    assert ds.interactions["context_id"].tolist() == ["01", "01"]
    assert ds.interactions["weight"].tolist() == [1.0, 1.0]
    assert "timestamp" not in ds.interactions.columns and not ds.has_timestamps


def test_parquet_input_with_integer_ids(tmp_path):
    root = tmp_path / "pq"
    root.mkdir()
    pq.write_table(pa.table({"item_id": pa.array([5, 17, 300], pa.int64()),
                             "title": ["a", None, "c"]}), root / "items.parquet")
    pq.write_table(pa.table({"context_id": pa.array([1, 1, 2], pa.int32()),
                             "item_id": pa.array([17, 300, 5], pa.int64()),
                             "timestamp": pa.array([10, 20, 30], pa.int64())}),
                   root / "interactions.parquet")
    ds = load_dataset(root)
    assert ds.items["item_id"].tolist() == ["5", "17", "300"]
    assert ds.items["title"].tolist() == ["a", "", "c"]
    assert ds.interactions["item_id"].tolist() == ["17", "300", "5"]
    assert ds.interactions["context_id"].tolist() == ["1", "1", "2"]
    assert ds.interactions["timestamp"].tolist() == [10, 20, 30]


def test_parquet_preferred_over_csv(tmp_path):
    root = make(tmp_path)  # CSV has items A, B, C
    pq.write_table(pa.table({"item_id": ["A", "B", "C", "D"]}), root / "items.parquet")
    ds = load_dataset(root)
    assert ds.items_file.name == "items.parquet" and len(ds.items) == 4
    assert ds.interactions_file.name == "interactions.csv"


def test_max_timestamp_filters_and_keeps_file_rows(tmp_path):
    root = make(tmp_path)
    ds = load_dataset(root, max_timestamp=250)
    assert ds.interactions["timestamp"].tolist() == [100, 200]
    assert ds.interactions["row"].tolist() == [0, 1]
    assert len(load_dataset(root, max_timestamp=300).interactions) == 3
    err = refuse(root, max_timestamp=50)
    assert err.file == "interactions.csv" and "50" in str(err)


def test_max_timestamp_ignored_without_timestamps(tmp_path):
    root = make(tmp_path, inter="context_id,item_id\nu,A\nu,B\n")
    assert len(load_dataset(root, max_timestamp=0).interactions) == 2


def test_fingerprint_tracks_bytes_of_files_used(tmp_path):
    root = make(tmp_path)
    first = data_fingerprint(root)
    assert first == data_fingerprint(root) and len(first) == 64
    write(root, "unrelated.txt", "ignored")
    assert data_fingerprint(root) == first
    write(root, "interactions.csv", INTER_CSV + "u3,A,1,500\n")
    assert data_fingerprint(root) != first


def test_error_pickles_with_attributes():
    err = DatasetError("bad", file="f.csv", column="c", row=3)
    back = pickle.loads(pickle.dumps(err))
    assert (back.file, back.column, back.row, str(back)) == ("f.csv", "c", 3, str(err))
    assert str(err) == "f.csv, column 'c', row 3: bad"
    assert isinstance(err, ValueError)


def test_integral_float_timestamp_accepted(tmp_path):
    ds = load_dataset(make(tmp_path, inter="context_id,item_id,timestamp\nu,A,1600000000.0\n"))
    assert ds.interactions["timestamp"].tolist() == [1600000000]


# ---------------------------------------------------------------------------------------------
# where a refusal points (CSV rows are file line numbers, header = line 1)

def test_csv_row_is_line_number_across_multiline_fields_and_blank_lines(tmp_path):
    items = 'item_id,text\nA,"two\nlines"\n\nB,x\nC,y\nB,z\n'
    err = refuse(make(tmp_path, items=items))
    # line 1 header, 2-3 item A, 4 blank, 5 B, 6 C, 7 the duplicate B
    check(err, "items.csv", "item_id", 7)
    assert "row 5" in str(err)


def test_blank_lines_counted_without_quotes(tmp_path):
    inter = "context_id,item_id,weight\nu,A,1\n\nu,B,1\nu,C,-1\n"
    check(refuse(make(tmp_path, inter=inter)), "interactions.csv", "weight", 5)


def test_first_bad_row_found_in_large_file(tmp_path):
    n = 200_000
    rows = np.full(n, "u,A,1", dtype=object)
    rows[150_000] = "u,A,-2"
    rows[180_000] = "u,A,x"
    err = refuse(make(tmp_path, inter="context_id,item_id,weight\n" + "\n".join(rows) + "\n"))
    check(err, "interactions.csv", "weight", 150_002)


# ---------------------------------------------------------------------------------------------
# parquet (rows are 1-based data rows)

def _pq(tmp_path, items: pa.Table, inter: pa.Table):
    root = tmp_path / "pq"
    root.mkdir(exist_ok=True)
    pq.write_table(items, root / "items.parquet")
    pq.write_table(inter, root / "interactions.parquet")
    return root


GOOD_ITEMS = pa.table({"item_id": ["A", "B"]})
GOOD_INTER = pa.table({"context_id": ["u", "u"], "item_id": ["A", "B"]})


def test_parquet_first_offending_row_wins_and_integral_floats_are_seconds(tmp_path):
    # the first offending row wins whatever the kind of problem
    inter = GOOD_INTER.append_column("timestamp", pa.array([1_700_000_000_000, -1], pa.int64()))
    check(refuse(_pq(tmp_path, GOOD_ITEMS, inter)), "interactions.parquet", "timestamp", 1)
    inter = GOOD_INTER.append_column("timestamp", pa.array([5.0, 6.0]))
    assert load_dataset(_pq(tmp_path, GOOD_ITEMS, inter)).interactions["timestamp"].tolist() == [5, 6]


def test_parquet_datetime_timestamps_become_seconds(tmp_path):
    ts = [datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2020, 1, 2, 0, 0, 0, 999_000,
                                                             tzinfo=timezone.utc)]
    inter = GOOD_INTER.append_column("timestamp", pa.array(ts, pa.timestamp("ms", tz="UTC")))
    ds = load_dataset(_pq(tmp_path, GOOD_ITEMS, inter))
    assert ds.interactions["timestamp"].tolist() == [1577836800, 1577923200]
