"""Bad input: every case is refused with a message naming the file, the column and the row (or the
parameter) and what was expected -- or is recovered from as the README's dataset contract documents.

One table, one row per case: ``REFUSED`` (the loader or the prepare stage), ``PARAMS`` (DAG
parameters), ``RECOVERED``. Good-input behaviour and the row-number mechanics stay in
tests/data/test_dataset.py; the same refusals through the real task path with an MLflow server (nothing
registered, no alias moved) are in test_faults_mlflow.py.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage import pipeline
from pinsage.data.dataset import DatasetError, load_dataset
from pinsage.run.layout import RunDir
from pinsage.run.params import ParamError
from tasks import errors, prepare, settings

ITEMS_CSV = "item_id,title,text\nA,Alpha,first item\nB,Beta,\nC,Gamma,third\n"  # lines 2-4: A, B, C
INTER_CSV = ("context_id,item_id,weight,timestamp\n"  # lines 2-5
             "u1,A,1.0,100\nu1,B,2.5,200\nu2,C,1,300\nu2,A,3,400\n")
GOOD_ITEMS = pa.table({"item_id": ["A", "B"]})
GOOD_INTER = pa.table({"context_id": ["u", "u"], "item_id": ["A", "B"]})


def files(**content) -> Callable[[Path], Path]:
    """A dataset directory from ``items`` / ``inter`` (CSV text or bytes, or a pa.Table -> Parquet);
    ``items=None`` leaves the table out. Defaults: the valid three-item dataset above."""
    def setup(root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        for key, name in (("items", "items"), ("inter", "interactions")):
            value = content.get(key, ITEMS_CSV if key == "items" else INTER_CSV)
            if value is None:
                continue
            if isinstance(value, pa.Table):
                pq.write_table(value, root / f"{name}.parquet")
            elif isinstance(value, bytes):
                (root / f"{name}.csv").write_bytes(value)
            elif callable(value):
                value(root, name)
            else:
                (root / f"{name}.csv").write_text(value, encoding="utf-8")
        return root
    return setup


def truncated_parquet(root: Path, name: str) -> None:
    pq.write_table(GOOD_ITEMS if name == "items" else GOOD_INTER, root / f"{name}.parquet")
    data = (root / f"{name}.parquet").read_bytes()
    (root / f"{name}.parquet").write_bytes(data[:len(data) // 2])  # a copy cut short


def csv_named_parquet(root: Path, name: str) -> None:
    (root / f"{name}.parquet").write_text("context_id,item_id\nu,A\n")


def community(n_items=5, contexts=(("A",), ("B",), ("C", "D"))) -> Callable[[Path], Path]:
    """Items i0..i{n-1} (with words) and contexts engaging the given items in order."""
    items = "item_id,title,text\n" + "".join(f"i{k},item {k},word{k % 3}\n" for k in range(n_items))
    inter = "context_id,item_id,timestamp\n" + "".join(
        f"c{c},{'i' + str('ABCDE'.index(i)) if i in 'ABCDE' else i},{1000 + 10 * c + t}\n"
        for c, ctx in enumerate(contexts) for t, i in enumerate(ctx))
    return files(items=items, inter=inter)


@dataclasses.dataclass
class Refused:
    id: str
    setup: Callable[[Path], Path]
    file: str  # err.file ends with this (the file name; the directory for directory-level problems)
    column: str | None
    row: int | None
    says: tuple[str, ...] = ()
    stage: str = "load"  # "load": load_dataset; "prepare": the pipeline's first stage
    kwargs: dict = dataclasses.field(default_factory=dict)


def weight_case(bad: str) -> Refused:
    inter = f"context_id,item_id,weight\nu,A,1\nu,B,0.5\nu,C,{bad}\nu,A,-7\n"  # line 4 first, not line 5
    return Refused(f"weight_{bad or 'empty'}", files(inter=inter), "interactions.csv", "weight", 4,
                   ("expected a positive number", repr(bad)))


def timestamp_case(name: str, bad: str, *says: str) -> Refused:
    return Refused(f"timestamp_{name}", files(inter=f"context_id,item_id,timestamp\nu,A,100\nu,B,{bad}\n"),
                   "interactions.csv", "timestamp", 3, ("unix seconds",) + says)


REFUSED = [
    # the directory and its files
    Refused("missing_dataset_directory", lambda root: root / "nope", "nope", None, None,
            ("does not exist", "expected a directory holding items")),
    Refused("dataset_path_is_a_file", lambda root: files()(root) / "items.csv", "items.csv", None, None,
            ("not a directory", "expected a dataset directory")),
    Refused("missing_items_table", files(items=None), "ds", None, None, ("items.parquet", "items.csv")),
    Refused("missing_interactions_table", files(inter=None), "ds", None, None,
            ("interactions.parquet", "interactions.csv")),
    Refused("empty_file", files(items=""), "items.csv", None, None, ("empty", "expected a header line")),
    Refused("header_only_items", files(items="item_id,title\n"), "items.csv", None, None,
            ("no data rows", "expected at least one data row")),
    Refused("header_only_interactions", files(inter="context_id,item_id\n"), "interactions.csv", None, None,
            ("no data rows",)),
    Refused("missing_column_item_id", files(items="id,title\nA,x\n"), "items.csv", "item_id", None,
            ("required column missing", "expected a header naming item_id")),
    Refused("missing_column_context_id", files(inter="user,item_id\nu,A\n"), "interactions.csv", "context_id",
            None, ("required column missing", "context_id, item_id")),
    Refused("missing_column_item_id_in_interactions", files(inter="context_id,item\nu,A\n"),
            "interactions.csv", "item_id", None, ("found columns ['context_id', 'item']",)),
    # the shape of the CSV
    Refused("wrong_delimiter_semicolon", files(items="item_id;title\nA;x\nB;y\nC;z\n"), "items.csv", "item_id",
            None, ("semicolon-separated", "must be comma-separated")),
    Refused("wrong_delimiter_tab", files(inter="context_id\titem_id\nu1\tA\n"), "interactions.csv",
            "context_id", None, ("tab-separated",)),
    Refused("truncated_csv_mid_record", files(inter=INTER_CSV + "u3"), "interactions.csv", "item_id", 6,
            ("item_id is empty", "truncated file", "expected a non-empty id")),
    Refused("truncated_csv_inside_quoted_field", files(items='item_id,title\nA,x\nB,"Beta, the sec'),
            "items.csv", None, 3, ("never closed", "truncated")),
    Refused("truncated_parquet", files(items=truncated_parquet), "items.parquet", None, None,
            ("cannot read as Parquet", "expected a complete Parquet file")),
    Refused("csv_named_parquet", files(inter=csv_named_parquet), "interactions.parquet", None, None,
            ("cannot read as Parquet",)),
    Refused("ragged_row_extra_fields", files(inter="context_id,item_id\nu,A\nu,B,9,9\n"), "interactions.csv",
            None, 3, ("cannot parse as CSV", "expected every row to have the header's number of fields")),
    # encoding
    Refused("non_utf8_bytes", files(items="item_id,title\nA,ok\nB,Caf\xe9\nC,x\n".encode("latin-1")),
            "items.csv", None, 3, ("byte 0xe9", "expected UTF-8 text")),
    Refused("utf16_file", files(items=ITEMS_CSV.encode("utf-16")), "items.csv", None, 1,
            ("looks like UTF-16", "save it as UTF-8")),
    # ids
    Refused("duplicate_item_id", files(items="item_id\nA\nB\nC\nB\nA\n"), "items.csv", "item_id", 5,
            ("duplicate item_id 'B'", "already at row 3", "expected every item_id once")),
    Refused("duplicate_item_id_after_stripping", files(items="item_id\nA\n A \nB\nC\n"), "items.csv", "item_id",
            3, ("duplicate item_id 'A'", "already at row 2")),
    Refused("mixed_types_in_id_column", files(items="item_id\n1\n2\n3\n",
                                              inter="context_id,item_id\nu,1\nu,2.0\nu,3\n"),
            "interactions.csv", "item_id", 3, ("unknown item '2.0'", "compared as text", "has '2'")),
    Refused("interaction_names_unknown_item", files(inter="context_id,item_id\nu,A\nu,B\nu,Z\nu,Y\n"),
            "interactions.csv", "item_id", 4, ("unknown item 'Z'", "expected an item_id of the items table")),
    Refused("empty_item_id", files(items="item_id,title\nA,x\n,y\nB,z\nC,w\n"), "items.csv", "item_id", 3,
            ("item_id is empty", "expected a non-empty id")),
    Refused("blank_item_id", files(items="item_id,title\nA,x\n   ,y\n"), "items.csv", "item_id", 3,
            ("item_id is empty",)),
    Refused("empty_context_id", files(inter="context_id,item_id\nu,A\n,B\n"), "interactions.csv", "context_id",
            3, ("context_id is empty",)),
    Refused("huge_id", files(items="item_id\nA\n" + "x" * 5000 + "\nB\n"), "items.csv", "item_id", 3,
            ("5,000 characters", "expected an id of at most 1,000 characters")),
    # weights: negative, zero, NaN, infinite, text, empty
    *[weight_case(bad) for bad in ("-3", "0", "nan", "inf", "-inf", "abc", "")],
    # timestamps: milliseconds, strings, fractions, negative, empty, infinite
    timestamp_case("milliseconds", "1600000000123", "looks like milliseconds"),
    timestamp_case("iso_date_string", "2024-03-01T12:00:00", "a date/time string", "1709294400"),
    timestamp_case("date_string_with_space", "2024-03-01 12:00", "a date/time string"),
    timestamp_case("text", "abc", "expected integer unix seconds >= 0"),
    timestamp_case("fraction", "1.5"),
    timestamp_case("negative", "-1", "got '-1'"),
    timestamp_case("empty", ""),
    timestamp_case("infinite", "inf"),
    Refused("max_timestamp_before_every_interaction", files(), "interactions.csv", "timestamp", None,
            ("no interaction has timestamp <= 50", "expected max_timestamp >= the earliest timestamp 100"),
            kwargs={"max_timestamp": 50}),
    # text fields and image paths
    Refused("huge_text_field", files(items="item_id,title\nA,x\nB," + "w" * 1_000_001 + "\nC,y\n"), "items.csv",
            "title", 3, ("1,000,001 characters", "expected at most 1,000,000")),
    Refused("unclosed_quote_swallows_the_file", files(items='item_id,text\nA,x\nB,"oops\n' + "C,y\n" * 300_000
                                                      + 'D,"z"\n'), "items.csv", "text", 3,
            ("characters", "an unclosed quote")),
    Refused("image_path_escapes_dataset_dir", files(items="item_id,image_path\nA,img/a.jpg\nB,../../etc/passwd\nC,\n"),
            "items.csv", "image_path", 3, ("'../../etc/passwd' escapes the dataset directory",
                                           "expected a path relative to the dataset directory")),
    Refused("image_path_escapes_after_normalising", files(items="item_id,image_path\nA,img/../../x.jpg\nB,\nC,\n"),
            "items.csv", "image_path", 2, ("escapes the dataset directory",)),
    Refused("image_path_absolute", files(items="item_id,image_path\nA,\nB,\nC,/etc/passwd\n"), "items.csv",
            "image_path", 4, ("is absolute",)),
    # catalogue and graph shapes
    Refused("catalogue_of_one_item", files(items="item_id\nA\n", inter="context_id,item_id\nu,A\n"), "items.csv",
            None, None, ("1 item", "expected at least 2 items")),
    Refused("contexts_of_one_item", community(contexts=(("A",), ("B",), ("C",), ("D",))), "interactions.csv",
            "context_id", None, ("no context has at least 3 interactions", "expected at least one context "
                                 "with 3 distinct items"), stage="prepare"),
    Refused("no_evaluation_pair_survives_the_split", community(contexts=(("A", "B"), ("C", "D"), ("E", "A"))),
            "interactions.csv", "context_id", None, ("at most 2 items each", "no validation/test pair"),
            stage="prepare"),
    Refused("repeats_collapse_below_three_items", community(contexts=(("A", "B", "A", "B", "A"),)),
            "interactions.csv", "context_id", None, ("after collapsing repeated",), stage="prepare"),
    # Parquet with the wrong types, nulls and bad values (rows are 1-based data rows)
    Refused("parquet_float_item_id", files(items=pa.table({"item_id": [1.5, 2.5]}), inter=GOOD_INTER),
            "items.parquet", "item_id", None, ("wrong Parquet type double", "expected string or integer")),
    Refused("parquet_string_weight", files(items=GOOD_ITEMS, inter=GOOD_INTER.append_column(
        "weight", pa.array(["1", "2"]))), "interactions.parquet", "weight", None, ("expected a number",)),
    Refused("parquet_string_timestamp", files(items=GOOD_ITEMS, inter=GOOD_INTER.append_column(
        "timestamp", pa.array(["2024-01-01", "2024-01-02"]))), "interactions.parquet", "timestamp", None,
        ("wrong Parquet type string", "expected integer unix seconds")),
    Refused("parquet_integer_title", files(items=GOOD_ITEMS.append_column("title", pa.array([1, 2])),
                                           inter=GOOD_INTER), "items.parquet", "title", None,
            ("wrong Parquet type int64", "expected string")),
    Refused("parquet_list_context_id", files(items=GOOD_ITEMS, inter=pa.table({
        "context_id": [["u"], ["v"]], "item_id": ["A", "B"]})), "interactions.parquet", "context_id", None,
        ("wrong Parquet type list",)),
    Refused("parquet_null_context_id", files(items=GOOD_ITEMS, inter=pa.table({
        "context_id": ["u", None], "item_id": ["A", "B"]})), "interactions.parquet", "context_id", 2,
        ("missing (null)",)),
    Refused("parquet_nan_weight", files(items=GOOD_ITEMS, inter=GOOD_INTER.append_column(
        "weight", pa.array([1.0, float("nan")]))), "interactions.parquet", "weight", 2,
        ("positive number, got 'nan'",)),
    Refused("parquet_negative_timestamp", files(items=GOOD_ITEMS, inter=GOOD_INTER.append_column(
        "timestamp", pa.array([-5, 10], pa.int64()))), "interactions.parquet", "timestamp", 1, (">= 0",)),
    Refused("parquet_millisecond_timestamp", files(items=GOOD_ITEMS, inter=GOOD_INTER.append_column(
        "timestamp", pa.array([5, 1_700_000_000_000], pa.int64()))), "interactions.parquet", "timestamp", 2,
        ("milliseconds",)),
    Refused("parquet_fractional_timestamp", files(items=GOOD_ITEMS, inter=GOOD_INTER.append_column(
        "timestamp", pa.array([5.0, 6.5]))), "interactions.parquet", "timestamp", 2, ("'6.5'",)),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_bad_input_is_refused_naming_file_column_row_and_what_was_expected(case, tmp_path):
    root = case.setup(tmp_path / "ds")
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        if case.stage == "load":
            load_dataset(root, **case.kwargs)
        else:
            cfg = pipeline.PipelineConfig(data=str(root), out=str(out))
            cfg.walks.top_t = 2
            pipeline.prepare(cfg, log=lambda s: None)
    err = info.value
    assert err.file is not None and err.file.endswith(case.file), str(err)
    assert (err.column, err.row) == (case.column, case.row), str(err)
    text = str(err)
    assert text.startswith(err.file)
    if case.column is not None:
        assert f"column '{case.column}'" in text
    if case.row is not None:
        assert f"row {case.row}" in text
    assert "expected" in text or "looked for" in text, text
    for fragment in case.says:
        assert fragment in text, (fragment, text)
    if "date" not in case.id:
        assert "date/time" not in text, text  # the date hint only where a date was written
    assert not (out / "prepare").exists()  # a refusal writes nothing a later step could pick up


def test_the_table_has_at_least_thirty_distinct_cases():
    ids = [c.id for c in REFUSED] + [c[0] for c in PARAMS] + [c.__name__ for c in RECOVERED]
    assert len(ids) == len(set(ids)) and len(REFUSED) >= 30, len(REFUSED)


# ---------------------------------------------------------------------------------------------
# DAG parameters: refused where the run starts (the prepare task), before any MLflow run exists

PARAMS = [
    ("negative_epochs", {"epochs": -1}, "DAG parameter 'epochs' (train.epochs)", "expected an integer >= 1, got -1"),
    ("zero_epochs", {"epochs": 0}, "DAG parameter 'epochs'", ">= 1"),
    ("zero_top_t", {"top_t": 0}, "DAG parameter 'top_t' (walks.top_t)", ">= 1"),
    ("zero_walks_per_item", {"walks_per_item": 0}, "DAG parameter 'walks_per_item'", ">= 1"),
    ("zero_hidden_dim", {"hidden_dim": 0}, "DAG parameter 'hidden_dim'", ">= 1"),
    ("negative_output_dim", {"output_dim": -4}, "DAG parameter 'output_dim'", ">= 1"),
    ("zero_learning_rate", {"learning_rate": 0.0}, "DAG parameter 'learning_rate'", "expected a finite number > 0"),
    ("nan_learning_rate", {"learning_rate": math.nan}, "DAG parameter 'learning_rate'", "finite"),
    ("negative_seed", {"seed": -1}, "DAG parameter 'seed'", ">= 0"),
    ("unknown_device", {"device": "tpu"}, "DAG parameter 'device'", "expected one of auto, cpu, cuda"),
    ("zero_batch_size", {"overrides": {"train.sampler.batch_size": 0}}, "override 'train.sampler.batch_size'",
     ">= 1"),
    ("restart_probability_above_one", {"overrides": {"walks.restart_prob": 1.5}}, "override 'walks.restart_prob'",
     "<= 1"),
    ("negative_workers", {"workers": -2}, "DAG parameter 'workers' (train.num_workers)", ">= -1"),
    ("negative_warmup", {"overrides": {"train.warmup_steps": -1}}, "override 'train.warmup_steps'", ">= 0"),
    ("negative_max_timestamp", {"max_timestamp": -5}, "DAG parameter 'max_timestamp'", ">= 0"),
    ("removed_option", {"overrides": {"walks.holdout_folds": 4}}, "'walks.holdout_folds'", "removed after measurement"),
    ("unknown_aggregator", {"overrides": {"model.aggregator": "sum"}}, "override 'model.aggregator'",
     "expected one of importance, mean"),
    ("ray_address_with_credentials", {"ray_address": "ray://pinsage:pw-0c9e3b@head:10001"},
     "DAG parameter 'ray_address'", "without credentials (no user:password@; the workers authenticate with "
     "$RAY_AUTH_TOKEN) (or empty), got 'ray://pinsage:***@head:10001'"),
]


@pytest.mark.parametrize("name,params,names,expected", PARAMS, ids=[p[0] for p in PARAMS])
def test_bad_dag_params_are_refused_naming_the_parameter(name, params, names, expected, tmp_path):
    params = dict(params)
    max_ts = params.pop("max_timestamp", None)
    with pytest.raises(errors.ConfigError) as info:
        settings.build_config(params, tmp_path / "out", max_timestamp=max_ts)
    assert names in str(info.value) and expected in str(info.value), str(info.value)
    assert "pw-0c9e3b" not in str(info.value)  # a refused secret is not echoed into the logs
    assert isinstance(info.value, errors.permanent_errors())  # the DAG fails it at once, no retries


def test_top_t_larger_than_the_catalogue_is_refused_by_prepare(tmp_path):
    root = community(n_items=5, contexts=(("A", "B", "C"), ("D", "E", "A")))(tmp_path / "ds")
    cfg = pipeline.PipelineConfig(data=str(root), out=str(tmp_path / "out"))
    cfg.walks.top_t = 5
    with pytest.raises(ParamError) as info:
        pipeline.prepare(cfg, log=lambda s: None)
    assert info.value.param == "walks.top_t"
    assert "items.csv holds 5 items" in str(info.value) and "expected top_t <= 4" in str(info.value)
    assert not (tmp_path / "out" / "prepare").exists()
    cfg.walks.top_t = 4  # the largest T that fits is accepted
    pipeline.prepare(cfg, log=lambda s: None)


def test_bad_params_through_the_prepare_task_register_nothing(store, tmp_path):
    """The real first task against a real MLflow store: a parameter refused before any run exists;
    T larger than the catalogue refused once the catalogue is read, the run marked FAILED."""
    c = store.client()
    root = community(n_items=5, contexts=(("A", "B", "C"), ("D", "E", "A")))(tmp_path / "ds")
    with pytest.raises(errors.ConfigError, match="DAG parameter 'epochs'"):
        prepare.run({"data": str(root), "epochs": -1}, run_key="manual__neg", dag_id="pinsage_daily")
    assert c.search_experiments(filter_string="name = 'pinsage'") == [] or not c.search_runs(
        [e.experiment_id for e in c.search_experiments()])
    with pytest.raises(errors.ConfigError) as info:
        prepare.run({"data": str(root), "top_t": 20}, run_key="manual__t", dag_id="pinsage_daily")
    assert "DAG parameter 'top_t' (walks.top_t)" in str(info.value) and "expected top_t <= 4" in str(info.value)
    run = c.search_runs([c.get_experiment_by_name("pinsage").experiment_id])[0]
    assert run.info.status == "FAILED" and run.data.tags["pinsage.failed_step"] == "prepare"
    assert "top_t" in run.data.tags["pinsage.error"]
    assert c.search_registered_models() == []
    assert not (Path(store.env["PINSAGE_RUNS_DIR"]) / "pinsage_daily" / "manual__t" / "prepare").exists()


# ---------------------------------------------------------------------------------------------
# documented recoveries (README, "Reading rules" and "What is refused")

def recovered_bom(tmp_path):
    bom = b"\xef\xbb\xbf"
    ds = load_dataset(files(items=bom + ITEMS_CSV.encode(), inter=bom + INTER_CSV.encode())(tmp_path / "ds"))
    assert ds.items["item_id"].tolist() == ["A", "B", "C"]
    assert ds.interactions["context_id"].tolist() == ["u1", "u1", "u2", "u2"]


def recovered_crlf_line_endings(tmp_path):
    ds = load_dataset(files(items=ITEMS_CSV.replace("\n", "\r\n"), inter=INTER_CSV.replace("\n", "\r\n"))(
        tmp_path / "ds"))
    assert ds.items["item_id"].tolist() == ["A", "B", "C"] and ds.items["text"].tolist()[2] == "third"
    assert ds.interactions["timestamp"].tolist() == [100, 200, 300, 400]


def recovered_quoted_commas_and_line_breaks(tmp_path):
    items = 'item_id,title,text\nA,"Alpha, the first","two\nlines"\nB,Beta,\nC,Gamma,x\n'
    ds = load_dataset(files(items=items)(tmp_path / "ds"))
    assert ds.items["title"].tolist()[0] == "Alpha, the first" and ds.items["text"].tolist()[0] == "two\nlines"


def recovered_long_text_below_the_limit(tmp_path):
    long = "word " * 100_000  # 500,000 characters: long, but below the 1,000,000 limit
    ds = load_dataset(files(items=f"item_id,text\nA,{long}\nB,x\nC,y\n")(tmp_path / "ds"))
    assert len(ds.items["text"].iloc[0]) == len(long)


def recovered_isolated_items(tmp_path):
    """Items no interaction names stay in the catalogue (ranked against, embedded from features)."""
    root = community(n_items=7, contexts=(("A", "B", "C"), ("D", "E", "A")))(tmp_path / "ds")
    cfg = pipeline.PipelineConfig(data=str(root), out=str(tmp_path / "out"))
    cfg.walks.top_t = 3
    pipeline.prepare(cfg, log=lambda s: None)
    summary = RunDir(cfg.out).summary()
    assert summary["n_items"] == 7  # i5, i6 are isolated
    train = pq.read_table(tmp_path / "out" / "prepare" / "train.parquet").to_pandas()
    assert not {"i5", "i6"} & set(train["item_id"])


def recovered_short_contexts_train_only(tmp_path):
    """Contexts with fewer than 3 items feed the graph but are never evaluation pairs."""
    root = community(n_items=5, contexts=(("A", "B", "C"), ("D", "E"), ("B",)))(tmp_path / "ds")
    cfg = pipeline.PipelineConfig(data=str(root), out=str(tmp_path / "out"))
    cfg.walks.top_t = 2
    pipeline.prepare(cfg, log=lambda s: None)
    valid = pq.read_table(tmp_path / "out" / "prepare" / "valid.parquet").to_pandas()
    train = pq.read_table(tmp_path / "out" / "prepare" / "train.parquet").to_pandas()
    assert valid["context_id"].tolist() == ["c0"]
    assert {"c1", "c2"} <= set(train["context_id"])


def recovered_image_path_to_a_missing_file_or_a_non_image(tmp_path):
    """Loading accepts it (the path stays inside the directory); the features stage gives that item a
    zero visual vector and has_image = 0 and counts it (tests/features/test_features.py reads real images)."""
    def with_files(root: Path, name: str) -> None:
        (root / "img").mkdir()
        (root / "img" / "notes.txt").write_text("not an image")
        (root / f"{name}.csv").write_text("item_id,image_path\nA,img/notes.txt\nB,img/missing.jpg\nC,\n")
    ds = load_dataset(files(items=with_files)(tmp_path / "ds"))
    assert ds.items["image_path"].tolist() == ["img/notes.txt", "img/missing.jpg", ""]
    from pinsage.features.images import decode, resolve_image_path

    root = (tmp_path / "ds").resolve()
    assert decode(resolve_image_path(root, "img/notes.txt"))[1].startswith("corrupt")
    assert decode(resolve_image_path(root, "img/missing.jpg")) == (None, "missing")


RECOVERED = [recovered_bom, recovered_crlf_line_endings, recovered_quoted_commas_and_line_breaks,
             recovered_long_text_below_the_limit, recovered_isolated_items, recovered_short_contexts_train_only,
             recovered_image_path_to_a_missing_file_or_a_non_image]


@pytest.mark.parametrize("case", RECOVERED, ids=[c.__name__ for c in RECOVERED])
def test_documented_recoveries(case, tmp_path):
    case(tmp_path)
