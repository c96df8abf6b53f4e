"""Loading Sigma documents: files and directories -> YAML nodes -> schema check -> model.

Owns reading rule files (``*.yml``/``*.yaml``, directories recursively, in name order), YAML
with line numbers (PyYAML's node API, as vigil.config does: every value can be blamed on the
line that wrote it), telling the three kinds of document apart (a rule has ``detection``, a
correlation ``correlation``, a filter ``filter``), each kind's schema check
(vigil.rules.schema), building the model (searches through vigil.rules.values, conditions
through vigil.rules.condition, correlations through vigil.rules.correlation_doc, filters into
vigil.rules.filters.Filter), what only the whole set can tell (duplicate ids and names, the
references of correlations: vigil.rules.correlation.resolve), and the outcome: the rules,
correlations and filters that loaded, and one RuleError ("FILE:LINE: reason") per document
refused, the others still loading. Hostile YAML is bounded: documents past a node budget or
nesting depth (alias bombs, self-referencing anchors) are refused. Does not know about events
or matching; applying filters to rules is vigil.rules.filters.apply_filters, by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from vigil.rules.condition import ConditionError, parse_condition
from vigil.rules.correlation import Correlation, resolve
from vigil.rules.correlation_doc import build as build_correlation
from vigil.rules.errors import RuleError
from vigil.rules.filters import Filter
from vigil.rules.model import Cond, DetectionItem, LogSource, Not, Or, Rule, Search
from vigil.rules.schema import correlation_schema, filter_schema, validate
from vigil.rules.schema import rule_schema as _schema
from vigil.rules.values import ValueError_, build_item

MAX_FILE_BYTES: Final = 4 << 20
MAX_NODES: Final = 200_000     # per document, counting every alias expansion
MAX_DEPTH: Final = 64
RULE_SUFFIXES: Final = (".yml", ".yaml")


class RulePathError(RuleError):
    """A path given to load does not exist or cannot be read (the CLI exits 2)."""


@dataclass
class LoadResult:
    rules: list[Rule] = field(default_factory=list)
    refused: list[RuleError] = field(default_factory=list)
    files: int = 0
    correlations: list[Correlation] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # the caller's: apply_filters' ones

    @property
    def with_warnings(self) -> list[Rule]:
        return [r for r in self.rules if r.warnings]

    def extend(self, other: LoadResult) -> None:
        self.rules.extend(other.rules)
        self.refused.extend(other.refused)
        self.files += other.files
        self.correlations.extend(other.correlations)
        self.filters.extend(other.filters)


class _Doc:
    """One YAML document as plain data, with the line of every value by its path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        self.nodes = 0
        self._scalars = yaml.SafeLoader("")

    def line(self, path: tuple[Any, ...]) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: tuple[Any, ...], msg: str) -> RuleError:
        return RuleError(msg, source=self.source, line=self.line(path))

    def data(self, node: yaml.Node, path: tuple[Any, ...] = (), depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RuleError(f"more than {MAX_NODES} YAML nodes (alias expansion?)",
                            source=self.source, line=node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            raise RuleError(f"nested deeper than {MAX_DEPTH} levels", source=self.source,
                            line=node.start_mark.line + 1)
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = self.data(k, (*path, "<key>"), depth + 1)
                if not isinstance(key, str):
                    raise RuleError(f"keys must be strings, got {key!r}", source=self.source,
                                    line=k.start_mark.line + 1)
                if key in out:
                    raise RuleError(f"duplicate key '{key}'", source=self.source,
                                    line=k.start_mark.line + 1)
                self.lines[(*path, key)] = k.start_mark.line + 1
                out[key] = self.data(v, (*path, key), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.data(v, (*path, i), depth + 1) for i, v in enumerate(node.value)]
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value   # dates stay text: the schema wants YYYY-MM-DD strings
        if node.tag in ("tag:yaml.org,2002:binary", "tag:yaml.org,2002:set",
                        "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"):
            raise RuleError(f"YAML type {node.tag.rsplit(':', 1)[-1]} has no place in a rule",
                            source=self.source, line=node.start_mark.line + 1)
        return self._scalars.construct_object(node, deep=True)


def _documents(text: str, source: str) -> Iterator[yaml.Node]:
    try:
        yield from yaml.compose_all(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise RuleError(f"YAML syntax error: {e.problem or e}", source=source,
                        line=mark.line + 1 if mark else 1) from None
    except yaml.YAMLError as e:
        raise RuleError(f"YAML error: {e}", source=source, line=1) from None


def load_text(text: str, source: str) -> LoadResult:
    """Every rule of one file's text (several documents: several rules)."""
    out = LoadResult(files=1)
    docs = _documents(text, source)
    while True:
        try:
            node = next(docs)
        except StopIteration:
            break
        except RuleError as e:
            out.refused.append(e)   # the stream cannot be resumed after a syntax error
            break
        if node is None:
            continue
        try:
            doc = _document(node, source)
            if isinstance(doc, Correlation):
                out.correlations.append(doc)
            elif isinstance(doc, Filter):
                out.filters.append(doc)
            else:
                out.rules.append(doc)
        except RuleError as e:
            out.refused.append(e)
        except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as e:
            # a scalar PyYAML cannot construct (e.g. an integer literal too long to convert)
            line = getattr(getattr(e, "problem_mark", None), "line", node.start_mark.line)
            out.refused.append(RuleError(f"cannot read the document: {e}".splitlines()[0],
                                         source=source, line=line + 1))
    return out


def _document(node: yaml.Node, source: str) -> Rule | Correlation | Filter:
    doc = _Doc(source)
    data = doc.data(node)
    if not isinstance(data, dict):
        raise doc.error((), "a rule must be a mapping")
    if "action" in data:
        raise doc.error(("action",), "rule collections ('action:') are not supported yet")
    if "detection" not in data and "correlation" in data and "filter" in data:
        raise doc.error(("filter",), "a document is a correlation or a filter, not both")
    if "detection" not in data and "correlation" in data:
        _check(doc, correlation_schema(), data, "correlation")
        return build_correlation(data, source, doc.line)
    if "detection" not in data and "filter" in data:
        _check(doc, filter_schema(), data, "filter")
        return _filter(doc, data)
    _check(doc, _schema(), data, "rule")
    return _rule(doc, data)


def _check(doc: _Doc, schema: dict[str, Any], data: dict[str, Any], kind: str) -> None:
    errors = validate(schema, data)
    if errors:
        path, msg = errors[0]
        name = ".".join(str(p) for p in path) or f"the {kind}"
        raise doc.error(path, f"{name} {msg} (Sigma {kind} schema)")


def _filter(doc: _Doc, data: dict[str, Any]) -> Filter:
    body: dict[str, Any] = data["filter"]
    base = ("filter",)
    search_schema = filter_schema()["properties"]["filter"]["properties"]["selection"]
    searches = {}
    for name, value in body.items():
        if name in ("rules", "condition"):
            continue
        if validate(search_schema, value):   # the schema says so of 'selection' only
            raise doc.error((*base, name), f"search '{name}' must be a map or a list of "
                            "values or maps, like 'selection'")
        searches[name] = _search(doc, name, value, base)
    cond = _condition(doc, body["condition"], searches, base)
    ls = data["logsource"]
    warnings = []
    if isinstance(cond, Not):
        warnings.append((doc.line((*base, "condition")),
                         "the filter's condition starts with 'not': Vigil leaves out the "
                         "rules' matches for which the filter condition is true (the Sigma "
                         "filter specification's reading); a filter written for pySigma, "
                         "which keeps only those, would leave out the opposite"))
    label = data.get("name")
    if label is not None and not isinstance(label, str):
        raise doc.error(("name",), "name must be text")
    return Filter(
        title=data["title"], id=data.get("id"), name=label, rules=tuple(body["rules"]),
        logsource=LogSource(ls.get("product"), ls.get("category"), ls.get("service")),
        searches=searches, condition=cond, source=doc.source, line=doc.line(("title",)),
        condition_text=str(body["condition"]), description=data.get("description"),
        date=data.get("date"), modified=data.get("modified"),
        rules_lines=tuple(doc.line((*base, "rules", i)) for i in range(len(body["rules"]))),
        logsource_line=doc.line(("logsource",)), warnings=tuple(warnings))


def _rule(doc: _Doc, data: dict[str, Any]) -> Rule:
    source = doc.source
    detection: dict[str, Any] = data["detection"]
    searches: dict[str, Search] = {}
    for name, value in detection.items():
        if name == "condition":
            continue
        searches[name] = _search(doc, name, value)
    cond_raw = detection["condition"]
    cond = _condition(doc, cond_raw, searches)
    ls = data.get("logsource", {})
    return Rule(
        title=data["title"], id=data.get("id"),
        logsource=LogSource(ls.get("product"), ls.get("category"), ls.get("service")),
        searches=searches, condition=cond, condition_text=str(cond_raw),
        source=source, line=doc.line(("title",)), level=data.get("level"),
        status=data.get("status"), description=data.get("description"),
        author=data.get("author"), references=tuple(data.get("references", ())),
        tags=tuple(data.get("tags", ())), falsepositives=tuple(data.get("falsepositives", ())),
        date=data.get("date"), modified=data.get("modified"), license=data.get("license"),
        logsource_line=doc.line(("logsource",)), name=data.get("name"))


def _condition(doc: _Doc, raw: Any, searches: dict[str, Search],
               base: tuple[str, ...] = ("detection",)) -> Cond:
    texts = raw if isinstance(raw, list) else [raw]
    if not texts:
        raise doc.error((*base, "condition"), "the condition list is empty")
    conds = []
    for i, t in enumerate(texts):
        path = (*base, "condition", i) if isinstance(raw, list) else (*base, "condition")
        if not isinstance(t, str):
            raise doc.error(path, f"a condition must be text, got {t!r}")
        try:
            conds.append(parse_condition(t, searches))
        except ConditionError as e:
            raise doc.error(path, f"condition {t!r}: {e}") from None
    return conds[0] if len(conds) == 1 else Or(tuple(conds))


def _search(doc: _Doc, name: str, value: Any, base: tuple[str, ...] = ("detection",)
            ) -> Search:
    path = (*base, name)
    if not name or name.startswith("|"):
        raise doc.error(path, f"'{name}' is not a valid search identifier")
    if isinstance(value, dict):
        return Search(name, (_items(doc, path, value),), doc.line(path))
    assert isinstance(value, list)   # the schema admits only maps and lists here
    if not value:
        raise doc.error(path, f"search '{name}' is an empty list")
    if all(isinstance(v, dict) for v in value):
        alts = tuple(_items(doc, (*path, i), v) for i, v in enumerate(value))
        return Search(name, alts, doc.line(path))
    if any(isinstance(v, dict | list) for v in value):
        raise doc.error(path, f"search '{name}' mixes keywords and maps")
    try:
        item = build_item("", value, doc.line(path))
    except ValueError_ as e:
        raise doc.error(path, f"{name}: {e}") from None
    return Search(name, ((item,),), doc.line(path))


def _items(doc: _Doc, path: tuple[Any, ...], m: dict[str, Any]) -> tuple[DetectionItem, ...]:
    if not m:
        raise doc.error(path, "an empty map matches nothing")
    out = []
    for spec, raw in m.items():
        try:
            out.append(build_item(spec, raw, doc.line((*path, spec))))
        except ValueError_ as e:
            raise doc.error((*path, spec), f"{spec}: {e}") from None
    return tuple(out)


def load_file(path: Path) -> LoadResult:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise RulePathError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        return LoadResult([], [RuleError(f"larger than {MAX_FILE_BYTES >> 20} MiB",
                                         source=str(path), line=1)], 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return LoadResult([], [RuleError(f"not UTF-8 text (byte {e.start})", source=str(path),
                                         line=raw[:e.start].count(b"\n") + 1)], 1)
    return load_text(text, str(path))


def rule_files(path: Path) -> list[Path]:
    """``path`` itself, or every rule file below it in name order."""
    if path.is_dir():
        out: list[Path] = []
        for root, dirs, files in os.walk(path, onerror=_raise):
            dirs.sort()
            out.extend(Path(root) / f for f in sorted(files) if f.endswith(RULE_SUFFIXES))
        return out
    if not path.exists():
        raise RulePathError(f"{path}: no such file or directory")
    return [path]


def _raise(e: OSError) -> None:
    raise RulePathError(f"{e.filename}: cannot read: {e.strerror}")


def load_paths(paths: Iterable[Path], annotate: bool = True) -> LoadResult:
    """Load files and directories. A document whose id, or (rules and correlations) name,
    an earlier one has is refused; so is a correlation referring to anything not loaded
    (correlation.resolve). ``annotate`` adds the field map's warnings (fields Vigil cannot
    provide) to each rule and correlation."""
    from vigil.rules.fieldmap import coverage_warnings

    out = LoadResult()
    for p in paths:
        for f in rule_files(Path(p)):
            out.extend(load_file(f))
    seen: dict[str, str] = {}   # id or name -> FILE:LINE of the first document with it
    out.rules = [r for r in out.rules if _unique(r, seen, out.refused)]
    out.correlations = [c for c in out.correlations if _unique(c, seen, out.refused)]
    out.filters = [f for f in out.filters if _unique(f, seen, out.refused)]
    out.correlations, errors = resolve(out.correlations, out.rules)
    out.refused.extend(errors)
    if annotate:
        out.rules = [replace(r, warnings=tuple(coverage_warnings(r))) for r in out.rules]
        out.correlations = [replace(c, warnings=tuple(_correlation_warnings(c, out.rules)))
                            for c in out.correlations]
    return out


def _unique(x: Rule | Correlation | Filter, seen: dict[str, str],
            refused: list[RuleError]) -> bool:
    keys = [("id", x.id)] if isinstance(x, Filter) else [("id", x.id), ("name", x.name)]
    for what, key in keys:
        if key is not None and key in seen:
            kind = "rule id" if isinstance(x, Rule) and what == "id" else what
            refused.append(RuleError(f"duplicate {kind} {key} (first in {seen[key]})",
                                     source=x.source, line=x.line))
            return False
    for _, key in keys:
        if key is not None:
            seen.setdefault(key, x.where)
    return True


def _correlation_warnings(c: Correlation, rules: list[Rule]) -> list[tuple[int, str]]:
    """Fields a correlation reads (group-by, value_count's field) from the records of its
    base rules that Vigil does not provide for the rule's category: such events never
    count."""
    from vigil.rules.fieldmap import coverage_warnings

    out: list[tuple[int, str]] = []
    by_ref = {k: r for r in rules for k in (r.id, r.name) if k is not None}
    for ref in c.rules:
        r = by_ref.get(ref)
        if r is None:   # a correlation: its records carry what its own rules gave
            continue
        wanted = [(c.aliases[g][ref] if g in c.aliases else g, c.group_by_line)
                  for g in c.group_by] + [(f, c.field_line) for f in c.field]
        items = tuple(DetectionItem(f, (), (), line=line) for f, line in wanted)
        probe = replace(r, searches={"fields": Search("fields", (items,))}, logsource_line=-1)
        for line, w in coverage_warnings(probe):
            if line != -1:   # the logsource is the rule's own warning
                msg = f"rule '{r.title}' ({r.where}): {w}; its events never count here"
                if (line, msg) not in out:
                    out.append((line, msg))
    return out


def builtin_rules_dir() -> Path:
    """The shipped rule pack (vigil/data/rules)."""
    return Path(__file__).parent.parent / "data" / "rules"
