"""Office and text files posted earlier in a Slack thread reach the core as context, like images and PDFs."""

from __future__ import annotations

from adapters.slack.events import earlier_files


def test_earlier_office_and_text_files_are_context_and_videos_are_not() -> None:
    replies = [
        {
            "ts": "1.0",
            "files": [
                {"id": "F1", "mimetype": "application/vnd.openxmlformats-officedocument.presentationml.presentation"}
            ],
        },
        {"ts": "2.0", "files": [{"id": "F2", "mimetype": "text/csv"}]},
        {"ts": "3.0", "files": [{"id": "F3", "mimetype": "application/vnd.ms-excel.sheet.macroEnabled.12"}]},
        {"ts": "4.0", "files": [{"id": "F4", "mimetype": "video/mp4"}]},
        {"ts": "5.0", "files": [{"id": "F5", "mimetype": "text/plain"}]},  # the question itself
    ]
    assert [f["id"] for f in earlier_files(replies, "5.0")] == ["F3", "F2", "F1"]
