"""What changed in the sandbox's Slack, as a stream of events for the page (``GET /api/events``).

The embedded Slack server keeps the workspace's state (messages, reactions, slash-command replies); whenever a
request reaches it (:attr:`SandboxSlack.touched`), or at least every second, the feed compares that state with
what it last saw and publishes the differences:

* ``message``: a message appeared or changed (a streamed edit, a reaction), with its whole view;
* ``deleted``: a message left the history (``channel``, ``ts``);
* ``ephemeral``: a reply only one person sees (``user``, ``channel``, ``text``, ``buttons``), from ``response_url``
  or ``chat.postEphemeral``, or Slack's own ``dispatch_failed`` when the bot did not ack a command in time;
* ``status``: the bot's status line in a thread (``channel``, ``thread_ts``, ``status``: "is looking at it…", the
  queue position; empty when cleared);
* ``socket``: the Socket Mode side changed (connections, envelopes acked, lost, redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from sandbox.workspace import Workspace, buttons

logger = logging.getLogger(__name__)

TICK_S = 1.0
"""The longest the feed waits between two looks (connections close without a request)."""
QUEUE_LIMIT = 1000
"""Events a slow page may fall behind by before its stream is ended (it reconnects and gets the state again)."""

Event = tuple[str, dict[str, Any]]


class Feed:
    """Publishes the workspace's changes to every subscriber; ``start``/``stop`` run its watching task."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._seen: dict[tuple[str, str], str] = {}
        self._responses_seen = 0
        self._ephemerals_seen = 0
        self._statuses_seen = 0
        self._failed_commands: set[str] = set()
        self._socket: dict[str, Any] = {}
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.changes()  # what is there now is the state a subscriber starts from
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="sandbox-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in list(self._subscribers):
            _offer(queue, None, force=True)

    async def subscribe(self) -> AsyncIterator[Event]:
        """The current state (every message, the socket), then each change as it happens, until the feed stops."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_LIMIT)
        for event in self.snapshot():
            queue.put_nowait(event)
        self._subscribers.add(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.discard(queue)

    def snapshot(self) -> list[Event]:
        slack = self.workspace.slack
        events: list[Event] = [
            ("message", self.workspace.message_view(channel, message))
            for channel, history in slack.messages.items()
            for message in history
        ]
        events.append(("socket", self.workspace.socket_state()))
        return events

    def changes(self) -> list[Event]:
        """What changed since the last call (the first call reports everything)."""
        events: list[Event] = []
        slack = self.workspace.slack
        current: dict[tuple[str, str], str] = {}
        for channel, history in slack.messages.items():
            for message in history:
                view = self.workspace.message_view(channel, message)
                key, fingerprint = (channel, view["ts"]), json.dumps(view, sort_keys=True)
                current[key] = fingerprint
                if self._seen.get(key) != fingerprint:
                    events.append(("message", view))
        events += [("deleted", {"channel": c, "ts": ts}) for c, ts in self._seen.keys() - current.keys()]
        self._seen = current
        events += self._new_entries()
        socket = self.workspace.socket_state()
        if socket != self._socket:
            self._socket = socket
            events.append(("socket", socket))
        return events

    def _new_entries(self) -> list[Event]:
        slack = self.workspace.slack
        events: list[Event] = []
        for response in slack.command_responses[self._responses_seen :]:
            target = self.workspace.ephemeral_target(str(response.get("rid")))
            if target is not None:
                events.append(ephemeral(target[0], target[1], response.get("text"), response.get("blocks")))
        self._responses_seen = len(slack.command_responses)
        for posted in slack.ephemerals[self._ephemerals_seen :]:
            events.append(
                ephemeral(
                    posted.get("user"),
                    posted.get("channel"),
                    posted.get("text"),
                    posted.get("blocks"),
                    posted.get("thread_ts"),
                )
            )
        self._ephemerals_seen = len(slack.ephemerals)
        events += self._undelivered_commands()
        for status in slack.statuses[self._statuses_seen :]:
            events.append(
                (
                    "status",
                    {
                        "channel": status.get("channel_id"),
                        "thread_ts": status.get("thread_ts"),
                        "status": status.get("status") or "",
                    },
                )
            )
        self._statuses_seen = len(slack.statuses)
        return events

    def _undelivered_commands(self) -> list[Event]:
        """What Slack tells the person whose slash command the bot did not ack in time (no connection, say)."""
        events: list[Event] = []
        late = time.monotonic() - self.workspace.slack.ack_timeout_s
        for delivery in self.workspace.slack.deliveries.values():
            envelope = delivery.envelope
            if (
                envelope.get("type") != "slash_commands"
                or delivery.acked_at is not None
                or delivery.sent_at > late
                or delivery.envelope_id in self._failed_commands
            ):
                continue
            self._failed_commands.add(delivery.envelope_id)
            payload = envelope["payload"]
            text = f'{payload["command"]} failed with the error "dispatch_failed"'
            events.append(ephemeral(payload["user_id"], payload["channel_id"], text, from_slack=True))
        return events

    def publish(self, events: list[Event]) -> None:
        for queue in list(self._subscribers):
            for event in events:
                if not _offer(queue, event):
                    logger.warning("a sandbox page fell %d events behind; ending its stream", QUEUE_LIMIT)
                    self._subscribers.discard(queue)
                    _offer(queue, None, force=True)
                    break

    async def _watch(self) -> None:
        touched = self.workspace.slack.touched
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(touched.wait(), TICK_S)
            touched.clear()
            try:
                events = self.changes()
            except Exception:  # a page must not stop the sandbox; the next look tries again
                logger.exception("sandbox feed: could not read the workspace")
                continue
            if events:
                self.publish(events)
            await asyncio.sleep(0.02)  # coalesce bursts (a streamed answer is many edits)


def ephemeral(
    user: object,
    channel: object,
    text: object,
    blocks: object = None,
    thread_ts: object = None,
    *,
    from_slack: bool = False,
) -> Event:
    """An ``ephemeral`` event: a message only ``user`` sees, from the bot (with its buttons) or from Slack itself."""
    return (
        "ephemeral",
        {
            "user": user,
            "channel": channel,
            "text": text or "",
            "thread_ts": thread_ts,
            "buttons": buttons(blocks if isinstance(blocks, list) else []),
            "from_slack": from_slack,
        },
    )


def _offer(queue: asyncio.Queue[Event | None], event: Event | None, *, force: bool = False) -> bool:
    if force and queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:
        return False
    return True
