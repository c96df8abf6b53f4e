"""Sigma conditions: the text of ``condition:`` parsed into model.Cond over search names.

Owns the grammar (least to most binding: ``or``, ``and``, ``not``, ``1 of``/``all of``,
parentheses; keywords in any case), the expansion of ``1 of``/``all of`` over a name, a
pattern (``selection_*``: ``*`` anywhere) or ``them`` (every search not starting with ``_``),
and the errors: an unknown name, a pattern that names nothing, a stray token, each with its
column. Does not evaluate anything.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection
from typing import Final

from vigil.rules.model import And, Cond, Not, Or, Ref

_TOKEN: Final = re.compile(r"\s*(?:(?P<p>[()])|(?P<w>[\w*]+)|(?P<bad>\S))")
MAX_DEPTH: Final = 64   # nesting of parentheses and nots; a rule is untrusted input


class ConditionError(Exception):
    """What is wrong with a condition, and where (column, 1-based)."""


def _tokens(text: str) -> list[tuple[str, int]]:
    out = []
    pos = 0
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        if m.group("bad") is not None:
            raise ConditionError(f"unexpected character {m.group('bad')!r} at column "
                                 f"{m.start('bad') + 1}")
        tok = m.group("p") or m.group("w")
        out.append((tok, m.start("p") if m.group("p") else m.start("w")))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, names: Collection[str]) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.names = list(names)
        self.depth = 0

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def peek_kw(self) -> str | None:
        t = self.peek()
        return t.lower() if t is not None else None

    def col(self) -> int:
        return self.toks[self.i][1] + 1 if self.i < len(self.toks) else -1

    def take(self) -> str:
        t = self.toks[self.i][0]
        self.i += 1
        return t

    def fail(self, what: str) -> ConditionError:
        t = self.peek()
        where = f"'{t}' at column {self.col()}" if t is not None else "the end"
        return ConditionError(f"{what}, found {where}")

    def parse(self) -> Cond:
        if not self.toks:
            raise ConditionError("the condition is empty")
        c = self.expr()
        if self.peek() is not None:
            raise self.fail("expected 'and', 'or' or the end")
        return c

    def expr(self) -> Cond:
        args = [self.and_expr()]
        while self.peek_kw() == "or":
            self.take()
            args.append(self.and_expr())
        return args[0] if len(args) == 1 else Or(tuple(args))

    def and_expr(self) -> Cond:
        args = [self.not_expr()]
        while self.peek_kw() == "and":
            self.take()
            args.append(self.not_expr())
        return args[0] if len(args) == 1 else And(tuple(args))

    def not_expr(self) -> Cond:
        if self.peek_kw() == "not":
            self.take()
            self.enter()
            c = Not(self.not_expr())
            self.depth -= 1
            return c
        return self.atom()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"the condition nests deeper than {MAX_DEPTH} levels")

    def atom(self) -> Cond:
        t = self.peek()
        kw = self.peek_kw()
        if t is None:
            raise self.fail("expected a search name, 'not', '1 of', 'all of' or '('")
        if t == "(":
            self.take()
            self.enter()
            c = self.expr()
            self.depth -= 1
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.take()
            return c
        if kw in ("1", "all") and self.i + 1 < len(self.toks) and \
                self.toks[self.i + 1][0].lower() == "of":
            self.take()
            self.take()
            return self.quantified(kw == "all")
        if t == ")" or kw in ("and", "or", "of"):
            raise self.fail("expected a search name, 'not', '1 of', 'all of' or '('")
        col = self.col()
        self.take()
        if "*" in t:
            raise ConditionError(f"a pattern ('{t}', column {col}) needs '1 of' or 'all of'")
        if t not in self.names:
            raise ConditionError(f"'{t}' (column {col}) is not a search identifier of this "
                                 f"rule (it has: {', '.join(sorted(self.names))})")
        return Ref(t)

    def quantified(self, all_: bool) -> Cond:
        t = self.peek()
        if t is None or t in "()":
            raise self.fail("expected a search name, a pattern or 'them' after 'of'")
        col = self.col()
        self.take()
        if t.lower() == "them":
            hits = [n for n in self.names if not n.startswith("_")]
        else:
            hits = [n for n in self.names if fnmatch.fnmatchcase(n, t)]
        if not hits:
            raise ConditionError(f"'{t}' (column {col}) matches no search identifier")
        refs: tuple[Cond, ...] = tuple(Ref(n) for n in sorted(hits))
        if len(refs) == 1:
            return refs[0]
        return And(refs) if all_ else Or(refs)


def parse_condition(text: str, names: Collection[str]) -> Cond:
    """Parse ``text`` over the rule's search ``names``; ConditionError says what and where."""
    return _Parser(text, names).parse()


def referenced(c: Cond) -> set[str]:
    """The search names a condition uses."""
    if isinstance(c, Ref):
        return {c.name}
    if isinstance(c, Not):
        return referenced(c.arg)
    out: set[str] = set()
    for a in c.args:
        out |= referenced(a)
    return out
