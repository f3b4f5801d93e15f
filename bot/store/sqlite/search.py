"""Full-text search of page text: what the FTS5 table indexes, safe queries, and snippets.

Page text goes into an FTS5 table (``unicode61 remove_diacritics 2``, ranked by bm25). unicode61 reads a run of
Chinese or Japanese characters as one token, so such runs are indexed as overlapping character bigrams (plus the
run's last character) and questions are cut the same way: ``预算`` finds ``第三季度预算表``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CJK_RUN = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
_WORD = re.compile(r"\w+")
MAX_QUERY_TERMS = 48
SNIPPET_CHARS = 160
SNIPPET_OCCURRENCES_PER_TERM = 50


def _cjk_tokens(run: str) -> list[str]:
    """Overlapping bigrams of a CJK run, plus its last character (so one-character questions find it too)."""
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)] + [run[-1]]


def index_text(text: str) -> str:
    """The form of page text the FTS table indexes: CJK runs become space-separated bigrams."""
    return _CJK_RUN.sub(lambda m: " " + " ".join(_cjk_tokens(m.group())) + " ", text)


def query_terms(text: str) -> list[str]:
    """Search terms of a free-text question: words, and bigrams of CJK runs (a lone CJK character stays)."""
    terms: list[str] = []
    position = 0
    for match in _CJK_RUN.finditer(text):
        terms.extend(_WORD.findall(text[position : match.start()]))
        run = match.group()
        terms.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        position = match.end()
    terms.extend(_WORD.findall(text[position:]))
    unique = list(dict.fromkeys(t.casefold() for t in terms))
    return unique[:MAX_QUERY_TERMS]


def fts_query(text: str) -> str | None:
    """A safe FTS5 MATCH expression for free text: every term quoted, ORed; None when nothing is searchable.

    Only word characters survive, so FTS5 syntax (quotes, ``*``, ``NEAR(``, ``-``, ``:``, ``^``) cannot reach the
    parser. A lone CJK character is a prefix query, so it also finds the bigrams it starts.
    """
    parts = []
    for term in query_terms(text):
        quoted = '"' + term.replace('"', '""') + '"'
        parts.append(quoted + "*" if _CJK_RUN.fullmatch(term) and len(term) == 1 else quoted)
    return " OR ".join(parts) if parts else None


def make_snippet(text: str, terms: Sequence[str], width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``text`` around the tightest stretch where the most (and longest) terms occur.

    Each distinct term counts its length, so "Kestrel turbine" outweighs "the" and "is". The start of the page when
    no term occurs.
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    folded = flat.casefold()
    occurrences: list[tuple[int, int, str]] = []  # (start, end, term)
    for term in terms:
        found = folded.find(term)
        for _ in range(SNIPPET_OCCURRENCES_PER_TERM):
            if found < 0:
                break
            occurrences.append((found, found + len(term), term))
            found = folded.find(term, found + 1)
    occurrences.sort()
    # Slide a window over the occurrences; score = total length of the distinct terms inside it.
    counts: dict[str, int] = {}
    score, best_score, best_span = 0, 0, (0, 0)
    last = 0
    for first, (start, _, _) in enumerate(occurrences):
        while last < len(occurrences) and occurrences[last][1] <= start + width:
            term = occurrences[last][2]
            counts[term] = counts.get(term, 0) + 1
            score += len(term) if counts[term] == 1 else 0
            last += 1
        span = (start, max(end for _, end, _ in occurrences[first:last]))
        if score > best_score or (score == best_score and span[1] - span[0] < best_span[1] - best_span[0]):
            best_score, best_span = score, span  # the most terms, then the tightest stretch
        term = occurrences[first][2]
        counts[term] -= 1
        score -= len(term) if counts[term] == 0 else 0
    begin = 0
    if best_score:  # centre the matched stretch in the window
        begin = max(0, min((best_span[0] + best_span[1] - width) // 2, len(flat) - width))
    end = min(len(flat), begin + width)
    return ("…" if begin > 0 else "") + flat[begin:end].strip() + ("…" if end < len(flat) else "")
