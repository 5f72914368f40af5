"""csource - a C source file cut into its top-level pieces (directives, declarations, function definitions) with their text and lines, for rewriting."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import AuthoringError

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+|\\\n)
  | (?P<nl>\n)
  | (?P<comment>/\*.*?\*/|//[^\n]*)
  | (?P<str>"(?:\\.|[^"\\\n])*")
  | (?P<chr>'(?:\\.|[^'\\\n])*')
  | (?P<id>[A-Za-z_]\w*)
  | (?P<num>\.?\d(?:[eEpP][+-]|[\w.])*)
  | (?P<punct>\.\.\.|<<=|>>=|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|\#\#|.)
""", re.S | re.X)
_DIRECTIVE = re.compile(r"[ \t]*#(?:[^\n\\]|\\.)*", re.S)
NOT_A_NAME = {"__attribute__", "__attribute", "__typeof__", "typeof", "__typeof", "__asm__", "asm", "__asm",
              "sizeof", "_Alignas", "__alignof__", "_Static_assert", "__declspec", "__builtin_offsetof"}


@dataclass(frozen=True)
class Token:
    kind: str      # id, num, str, chr, punct, pp (a whole preprocessor directive)
    text: str
    start: int
    end: int
    line: int


def tokenize(text):
    """The tokens of C source text, comments and blanks left out; a
    preprocessor directive (with its continuation lines) is one 'pp' token."""
    out = []
    pos, line, at_line_start = 0, 1, True
    n = len(text)
    while pos < n:
        if at_line_start:
            m = _DIRECTIVE.match(text, pos)
            if m:
                out.append(Token("pp", m.group(), pos, m.end(), line))
                line += m.group().count("\n")
                pos = m.end()
                continue
        m = _TOKEN.match(text, pos)
        if m is None:
            raise AuthoringError(f"line {line}: cannot read the C source at {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        value = m.group()
        if kind == "nl":
            line += 1
            at_line_start = True
        elif kind in ("ws", "comment"):
            line += value.count("\n")
            if kind == "ws" and value == "\\\n":
                at_line_start = False
        else:
            out.append(Token(kind, value, pos, m.end(), line))
            at_line_start = False
        pos = m.end()
    return out


@dataclass
class Piece:
    """A top-level piece: a directive, a declaration, or a function definition."""

    kind: str                     # "directive", "declaration" or "function"
    start: int                    # offset of its first token
    end: int                      # offset just past it
    lead: int                     # offset where the text before it (comments, blanks) starts
    first_line: int
    last_line: int
    tokens: list = field(repr=False, default_factory=list)
    name: str | None = None       # a function's name
    body_start: int | None = None  # offset of a function body's '{'

    def text(self, source):
        return source[self.start:self.end]

    def identifiers(self):
        return {t.text for t in self.tokens if t.kind == "id"} | \
            {w for t in self.tokens if t.kind == "pp" for w in re.findall(r"[A-Za-z_]\w*", t.text)}


_OPEN, _CLOSE = {"(": ")", "[": "]", "{": "}"}, {")", "]", "}"}


def pieces(source):
    """Cut C source text into its top-level Pieces, in order."""
    toks = tokenize(source)
    out = []
    i, prev_end = 0, 0
    while i < len(toks):
        t = toks[i]
        if t.kind == "pp":
            out.append(Piece("directive", t.start, t.end, prev_end, t.line, t.line + t.text.count("\n"), [t]))
            prev_end = t.end
            i += 1
            continue
        j, depth, saw_equals = i, 0, False
        piece = None
        while j < len(toks):
            u = toks[j]
            if u.kind == "punct":
                if u.text == "=" and depth == 0:
                    saw_equals = True
                if u.text == "{" and depth == 0 and not saw_equals and _closes_parameters(toks, i, j):
                    k = _matching(toks, j)
                    piece = Piece("function", t.start, toks[k].end, prev_end, t.line, toks[k].line, toks[i:k + 1],
                                  _function_name(toks[i:j]), u.start)
                    j = k
                    break
                if u.text in _OPEN:
                    depth += 1
                elif u.text in _CLOSE:
                    depth -= 1
                elif u.text == ";" and depth == 0:
                    piece = Piece("declaration", t.start, u.end, prev_end, t.line, u.line, toks[i:j + 1])
                    break
            j += 1
        if piece is None:
            raise AuthoringError(f"line {t.line}: a declaration that never ends (no ';' or body)")
        out.append(piece)
        prev_end = piece.end
        i = j + 1
    return out


def _closes_parameters(toks, i, j):
    """A '{' at toks[j] opens a function body: the declarator before it ends
    with a parameter list (or an attribute after one)."""
    k = j - 1
    while k >= i and toks[k].kind == "pp":
        k -= 1
    return k >= i and toks[k].text == ")"


def _matching(toks, j):
    depth = 0
    for k in range(j, len(toks)):
        if toks[k].kind != "punct":
            continue
        if toks[k].text in _OPEN:
            depth += 1
        elif toks[k].text in _CLOSE:
            depth -= 1
            if depth == 0:
                return k
    raise AuthoringError(f"line {toks[j].line}: a '{toks[j].text}' that is never closed")


def _function_name(toks):
    depth, name = 0, None
    for a, b in zip(toks, toks[1:]):
        if a.kind == "punct" and a.text in _OPEN:
            depth += 1
        elif a.kind == "punct" and a.text in _CLOSE:
            depth -= 1
        if depth == 0 and a.kind == "id" and b.text == "(" and a.text not in NOT_A_NAME:
            name = a.text
    return name


def statement_at(source, piece, line, name):
    """The (start, end) offsets of the declaration statement inside a
    function that declares `name` and begins with `static` on `line` (or,
    failing that, anywhere in the body)."""
    toks = [t for t in piece.tokens if t.start > (piece.body_start or piece.start)]
    starts = [k for k, t in enumerate(toks) if t.text == "static" and t.kind == "id"]
    ordered = [k for k in starts if toks[k].line == line] + [k for k in starts if toks[k].line != line]
    for k in ordered:
        depth = 0
        for m in range(k, len(toks)):
            u = toks[m]
            if u.kind == "punct" and u.text in _OPEN:
                depth += 1
            elif u.kind == "punct" and u.text in _CLOSE:
                depth -= 1
            elif u.text == ";" and depth == 0:
                if any(x.kind == "id" and x.text == name for x in toks[k:m]):
                    return toks[k].start, u.end, toks[k:m + 1]
                break
    return None


def without_initializers(tokens, source):
    """A declaration's text without its initializers (`= ...` up to the next
    top-level ',' or ';')."""
    depth, skipping = 0, False
    last = tokens[0].start
    chunks = []
    for t in tokens:
        if t.kind == "punct" and t.text in _OPEN:
            depth += 1
        elif t.kind == "punct" and t.text in _CLOSE:
            depth -= 1
        if not skipping and depth == 0 and t.text == "=":
            chunks.append(source[last:t.start].rstrip())
            skipping = True
            continue
        if skipping and depth == 0 and t.text in (",", ";"):
            skipping = False
            last = t.start
    chunks.append(source[last:tokens[-1].end])
    return "".join(chunks)
