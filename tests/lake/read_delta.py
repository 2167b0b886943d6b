"""Reads the store's tables as Delta Lake tables with delta-rs and DuckDB.

Run by tests/e2e_lake.rs with the venv's python (see .ci/run):

    python read_delta.py STORE_ROOT --table NAME ... [--at TABLE=VERSION ...]

STORE_ROOT is a folder or an s3:// URL (delta-rs then connects as the AWS_* variables
say).

Prints one JSON object: per table its Delta version, the rows delta-rs reads, the rows
DuckDB reads over delta-rs's dataset, the rows a plain glob of the table's Parquet
files would count (what a reader that ignores the Delta log would see), and the live
files; per `--at`, the rows of that table at that older version (time travel); and the
numerator and denominator sums of every KPI in the lake's `kpi_hourly`.
"""

import argparse
import json
import os

import duckdb
from deltalake import DeltaTable


def duck(sql: str, **datasets):
    """All rows of `sql` in DuckDB, over the given Arrow datasets (by name)."""
    con = duckdb.connect()
    try:
        for name, dataset in datasets.items():
            con.register(name, dataset)
        return con.execute(sql).fetchall()
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--table", action="append", required=True, help="a table to read (every one, from the test)")
    parser.add_argument("--at", action="append", default=[])
    args = parser.parse_args()
    out = {"tables": {}, "at": {}, "kpis": {}}
    for table in args.table:
        path = os.path.join(args.root, "tables", table)
        dt = DeltaTable(path)
        dataset = dt.to_pyarrow_dataset()
        duck_rows = duck("SELECT count(*) FROM t", t=dataset)[0][0]
        glob = os.path.join(path, "????-??-??", "*.parquet")
        # DuckDB reaches a bucket only through an extension it downloads: no glob there.
        bucket = args.root.startswith("s3://")
        globbed = None if bucket else duck(f"SELECT count(*) FROM read_parquet('{glob}')")[0][0] if dt.file_uris() else 0
        out["tables"][table] = {
            "version": dt.version(),
            "rows": dt.to_pyarrow_table(columns=[dt.schema().fields[0].name]).num_rows,
            "duckdb_rows": duck_rows,
            "glob_rows": globbed,
            "files": len(dt.file_uris()),
        }
    for spec in args.at:
        table, version = spec.split("=")
        dt = DeltaTable(os.path.join(args.root, "tables", table), version=int(version))
        out["at"][spec] = dt.to_pyarrow_table(columns=[dt.schema().fields[0].name]).num_rows
    kpi = DeltaTable(os.path.join(args.root, "tables", "kpi_hourly")).to_pyarrow_table(
        columns=["kpi", "numerator", "denominator"]
    )
    sums = kpi.group_by("kpi").aggregate([("numerator", "sum"), ("denominator", "sum")])
    for row in sums.to_pylist():
        out["kpis"][row["kpi"]] = [row["numerator_sum"], row["denominator_sum"]]
    # DuckDB agrees on the KPI sums, over the same dataset.
    kpi_dataset = DeltaTable(os.path.join(args.root, "tables", "kpi_hourly")).to_pyarrow_dataset()
    for name, num, den in duck("SELECT kpi, sum(numerator), sum(denominator) FROM k GROUP BY kpi", k=kpi_dataset):
        if out["kpis"].get(name) != [num, den]:
            raise SystemExit(f"DuckDB and delta-rs disagree on {name}: {[num, den]} vs {out['kpis'].get(name)}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
