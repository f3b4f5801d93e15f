"""Parts of Office and text files in the SQLite document index: stored many at once, searched, read back."""

from __future__ import annotations

from bot.store.base import DocumentInfo
from bot.store.sqlite import SQLiteStore


async def test_parts_are_stored_in_one_go_found_by_label_and_text_and_read_back(store: SQLiteStore) -> None:
    await store.documents.add_document(DocumentInfo("deck", "C1", "deck.pptx", 3, file_ref="{}"))
    parts = [(n, f"slide {n}\nRoutine status {n}", f"h{n}") for n in range(1, 4)]
    parts[1] = (2, "slide 2\nThe kiwi budget moves to March", "h2")
    await store.documents.put_pages("deck", parts, source="extracted")

    [info] = await store.documents.documents("C1")
    assert (info.page_count, info.indexed_pages) == (3, 3)
    assert [hit.page for hit in await store.documents.search(["deck"], "kiwi budget", 3)] == [2]
    assert (await store.documents.search(["deck"], "slide 3", 1))[0].page == 3
    assert await store.documents.page_texts("deck", [3, 2, 9]) == {
        2: "slide 2\nThe kiwi budget moves to March",
        3: "slide 3\nRoutine status 3",
    }

    await store.documents.put_pages("deck", [(2, "slide 2\nNothing new", "h2b")], source="extracted")  # replaced
    assert await store.documents.search(["deck"], "kiwi", 3) == []
    assert await store.documents.page_texts("deck", range(1, 2000)) == {
        1: "slide 1\nRoutine status 1",
        2: "slide 2\nNothing new",
        3: "slide 3\nRoutine status 3",
    }
