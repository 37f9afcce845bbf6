#!/usr/bin/env python3
"""tests/chdb_run.py: run SQL on ClickHouse 26 in-process (chdb), for the Rust integration tests.

Reads one JSON object from stdin:
    {"database": NAME, "setup": [SQL, ...], "queries": [SQL, ...]}
creates the database in a fresh chdb session, makes it current, runs the setup statements
(DDL, INSERT ... FORMAT JSONEachRow with the data on the following lines) and then every query,
and prints one JSON object to stdout:
    {"version": "26.9.x", "results": [JSONEachRow text of query 0, ...]}
Any error exits with status 1 and names the statement on stderr.
"""

import json
import sys

from chdb import session as chs


def main() -> int:
    job = json.load(sys.stdin)
    sess = chs.Session()
    try:
        db = job["database"]
        sess.query(f"CREATE DATABASE IF NOT EXISTS {db}")
        sess.query(f"USE {db}")
        for i, sql in enumerate(job.get("setup", [])):
            try:
                sess.query(sql)
            except Exception as e:  # chdb raises ChdbError (a RuntimeError) on any SQL error
                print(f"chdb_run: setup statement {i} failed: {str(e).strip()}\n{sql[:500]}", file=sys.stderr)
                return 1
        results = []
        for i, sql in enumerate(job.get("queries", [])):
            try:
                results.append(sess.query(sql, "JSONEachRow").bytes().decode("utf-8"))
            except Exception as e:
                print(f"chdb_run: query {i} failed: {str(e).strip()}\n{sql}", file=sys.stderr)
                return 1
        version = sess.query("SELECT version()", "TabSeparated").bytes().decode().strip()
    finally:
        sess.close()
    json.dump({"version": version, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
