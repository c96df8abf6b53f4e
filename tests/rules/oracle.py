"""The independent engine of the differential test and the benchmark: pySigma converts each
rule to SQL (pysigma-backend-sqlite), SQLite runs it over the events in one table per
logsource category, columns named like the Sysmon fields (TEXT COLLATE NOCASE, as Zircolite,
the backend's reference consumer, builds them; a missing field is NULL)."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError

Record = dict[str, str]


def _regexp(pattern: str, value: object) -> bool:
    # The backend's README: "Register one that is false for NULL"
    return value is not None and re.search(pattern, str(value)) is not None


@dataclass
class SqlRule:
    source: str
    category: str
    sql: str


def convert(path: Path, categories: dict[str, str]) -> dict[str, SqlRule | str]:
    """Each rule of a file (by id) -> its SQL for its category's table (``categories``: id ->
    category), or why it does not convert."""
    try:
        collection = SigmaCollection.from_yaml(path.read_text("utf-8"))
    except SigmaError as e:
        return {rid: f"{type(e).__name__}: {e}" for rid in categories}
    out: dict[str, SqlRule | str] = {}
    for rule in collection.rules:
        rid = str(rule.id)
        if rid not in categories:
            continue
        try:
            queries = sqliteBackend(table=categories[rid]).convert_rule(rule)
        except SigmaError as e:
            out[rid] = f"{type(e).__name__}: {e}"
            continue
        if len(queries) != 1:
            out[rid] = f"{len(queries)} queries"
            continue
        out[rid] = SqlRule(str(path), categories[rid],
                           queries[0].replace("SELECT * FROM", "SELECT rowid FROM", 1))
    for rid in categories:
        out.setdefault(rid, "pySigma did not load it")
    return out


def database(events: list[tuple[str, Record]], columns: dict[str, set[str]]
             ) -> tuple[sqlite3.Connection, dict[str, list[int]]]:
    """An in-memory database, one table per category; event i of a category is the row whose
    rowid maps back to its index in ``events`` (the second result)."""
    db = sqlite3.connect(":memory:")
    db.create_function("regexp", 2, _regexp, deterministic=True)
    index: dict[str, list[int]] = {}
    by_cat: dict[str, list[int]] = {}
    for i, (cat, rec) in enumerate(events):
        by_cat.setdefault(cat, []).append(i)
        columns.setdefault(cat, set()).update(rec)
    for cat, idx in by_cat.items():
        cols = sorted(columns[cat], key=str.lower)
        lowered: dict[str, str] = {}
        for c in cols:
            lowered.setdefault(c.lower(), c)
        cols = list(lowered.values())
        q = ", ".join(f'"{c}" TEXT COLLATE NOCASE' for c in cols)
        db.execute(f'CREATE TABLE "{cat}" ({q})')
        ins = f'INSERT INTO "{cat}" (rowid, {", ".join(f"{chr(34)}{c}{chr(34)}" for c in cols)}) ' \
              f'VALUES (?, {", ".join("?" for _ in cols)})'
        rows = []
        for row, i in enumerate(idx, 1):
            rec = events[i][1]
            rows.append((row, *(rec.get(c) for c in cols)))
        db.executemany(ins, rows)
        index[cat] = idx
    return db, index


def run(db: sqlite3.Connection, index: dict[str, list[int]], rule: SqlRule) -> set[int]:
    """Indices (into the events) of the rows the rule's SQL selects."""
    idx = index.get(rule.category)
    if idx is None:
        return set()
    return {idx[r - 1] for (r,) in db.execute(rule.sql)}
