"""The independent engine of the differential test and the benchmark: pySigma converts each
rule to SQL (pysigma-backend-sqlite), SQLite runs it over the events in one table per
logsource key (category, or ``auditd``), columns named like the record's fields (TEXT COLLATE
NOCASE, as Zircolite, the backend's reference consumer, builds them; a missing field is NULL).

Keyword (field-less) searches need the backend's ``fulltext_field``: the column FULLTEXT holds
each record's values joined by FULLTEXT_SEP (a control character no rule's keyword contains),
so that, as in Sigma and in Vigil, a keyword is found inside one value of the event."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import yaml
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError

Record = dict[str, str]
FULLTEXT = "_fulltext"
FULLTEXT_SEP = "\x1f"


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
        # the rules alone: pySigma converts nothing for a rule that a correlation in the same
        # collection uses as a mere input (generate: false); correlations are not compared
        docs = [d for d in yaml.safe_load_all(path.read_text("utf-8"))
                if isinstance(d, dict) and "correlation" not in d]
        collection = SigmaCollection.from_dicts(docs)
    except SigmaError as e:
        return {rid: f"{type(e).__name__}: {e}" for rid in categories}
    out: dict[str, SqlRule | str] = {}
    for rule in collection.rules:
        rid = str(rule.id)
        if rid not in categories:
            continue
        try:
            queries = sqliteBackend(table=categories[rid],
                                    fulltext_field=FULLTEXT).convert_rule(rule)
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
        cols = [c for c in lowered.values() if c.lower() != FULLTEXT]
        q = ", ".join(f'"{c}" TEXT COLLATE NOCASE' for c in (*cols, FULLTEXT))
        db.execute(f'CREATE TABLE "{cat}" ({q})')
        names = ", ".join(f'"{c}"' for c in (*cols, FULLTEXT))
        ins = f'INSERT INTO "{cat}" (rowid, {names}) VALUES (?, ?{", ?" * len(cols)})'
        rows = []
        for row, i in enumerate(idx, 1):
            rec = events[i][1]
            rows.append((row, *(rec.get(c) for c in cols), FULLTEXT_SEP.join(rec.values())))
        db.executemany(ins, rows)
        index[cat] = idx
    return db, index


def run(db: sqlite3.Connection, index: dict[str, list[int]], rule: SqlRule) -> set[int]:
    """Indices (into the events) of the rows the rule's SQL selects."""
    idx = index.get(rule.category)
    if idx is None:
        return set()
    return {idx[r - 1] for (r,) in db.execute(rule.sql)}
