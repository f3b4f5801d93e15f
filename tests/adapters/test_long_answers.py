"""The kit's rule for long answers: when one goes out as a file, and the summary that comes with it."""

from __future__ import annotations

from adapters.kit.longanswers import ANSWER_FILE_NAME, LongAnswers, file_summary, widest_table_row

WIDE_TABLE = "Here are the hosts:\n\n| host | " + " | ".join(f"metric {i}" for i in range(14)) + " |\n|---|---|"
NARROW_TABLE = "| a | b |\n|---|---|\n| 1 | 2 |"


def test_more_than_three_messages_or_a_wide_table_make_a_file() -> None:
    rule = LongAnswers()
    assert not rule.as_file("short", 3)
    assert rule.as_file("long", 4)
    assert widest_table_row(WIDE_TABLE) > 120 and rule.as_file(WIDE_TABLE, 1)
    assert widest_table_row(NARROW_TABLE) == 9 and not rule.as_file(NARROW_TABLE, 1)
    assert widest_table_row("a | b | c") == 0, "not a table row"


def test_zero_turns_the_rule_off() -> None:
    assert not LongAnswers(max_messages=0).as_file(WIDE_TABLE, 9)
    assert not LongAnswers(table_chars=0).as_file(WIDE_TABLE, 1)


def test_the_summary_is_the_opening_up_to_the_first_table_and_fits_the_message() -> None:
    summary = file_summary(WIDE_TABLE, 3900)
    assert summary.startswith("Here are the hosts:\n\n_The full answer (")
    assert summary.endswith(f"is in the file {ANSWER_FILE_NAME} below._")
    long_opening = "word " * 400
    cut = file_summary(long_opening, 500)
    assert len(cut) <= 500 and cut.split("\n\n")[0].endswith("…")
    assert file_summary("```\ncode\n```", 3900).startswith("_The full answer"), "no opening before the code"
    assert file_summary("word " * 50, 60).startswith("_The full answer"), "no room for an opening"
