"""The kit's text helpers: long answers cut into messages that render, the progress line, file sizes."""

from __future__ import annotations

from adapters.kit.text import FENCE, LOOKING, is_progress_text, progress_text, size_text, split_text, streaming_view


def words(text: str) -> list[str]:
    return text.replace(FENCE, " ").split()


def test_short_and_blank_texts() -> None:
    assert split_text("  hello  ", 100) == ["hello"]
    assert split_text(" \n ", 100) == []


def test_pieces_are_cut_at_paragraphs_first_and_keep_every_word() -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 30 for i in range(10))
    pieces = split_text(text, 400)
    assert len(pieces) > 1 and all(len(p) <= 400 for p in pieces)
    assert all(p.startswith("Paragraph") for p in pieces)
    assert words(" ".join(pieces)) == words(text)


def test_text_without_breaks_uses_the_whole_limit() -> None:
    assert split_text("a" * 250, 100) == ["a" * 100, "a" * 100, "a" * 50]


def test_a_code_block_cut_in_two_is_closed_and_reopened_with_its_indentation() -> None:
    code = "\n".join(f"    line {i} = compute({i})" for i in range(60))
    text = f"Here is the code:\n{FENCE}python\n{code}\n{FENCE}\nDone."
    pieces = split_text(text, 300)
    assert len(pieces) > 3 and all(len(p) <= 300 for p in pieces)
    assert all(p.count(FENCE) % 2 == 0 for p in pieces)
    assert all(p.startswith(f"{FENCE}\n    line") for p in pieces[1:-1])  # reopened, indentation intact
    assert words(" ".join(pieces)) == words(text)


def test_a_fence_is_never_cut_in_two() -> None:
    text = "x" * 98 + FENCE + "\ncode\n" + FENCE
    pieces = split_text(text, 100)
    assert all(p.count("`") % 3 == 0 for p in pieces)
    assert "".join(pieces).replace(FENCE, "").replace("\n", "") == "x" * 98 + "code"


def test_progress_text_and_how_it_is_recognised() -> None:
    assert progress_text(None) == progress_text(0) == LOOKING
    assert progress_text(1) == "Queued — 1 question ahead of yours."
    assert progress_text(4) == "Queued — 4 questions ahead of yours."
    assert is_progress_text(LOOKING) and is_progress_text(progress_text(7))
    assert not is_progress_text("A login form.")


def test_a_streamed_view_is_cut_with_an_ellipsis() -> None:
    assert streaming_view("short", 10) == "short"
    view = streaming_view("word " * 10, 12)
    assert len(view) <= 12 and view.endswith("…")


def test_sizes_read_the_same_in_every_reply() -> None:
    assert size_text(1000) == "1000 bytes"
    assert size_text(5000) == "5 KB"
    assert size_text(25 * 2**20) == "25 MB"
    assert size_text(15.3 * 2**20) == "15.3 MB"
    assert size_text(3 * 2**30) == "3 GB"
