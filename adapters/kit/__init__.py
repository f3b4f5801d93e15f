"""The adapter kit: what every chat platform's adapter shares, so that a platform folder holds only what is its own.

No platform SDK is imported here; the kit uses only the core's types (``bot.types``), formatters (``bot.fmt``) and
sentences (``bot.i18n``).
Import from the modules:

``adapters.kit.replies`` — the streaming reply.
    ``StreamingReply(surface, ReplyConfig(update_interval_s, max_chars), spawn=...)`` is the core's reply handle
    (``ReplyHandle``, ``ResumableReply``, ``JournaledReply``, ``RetractableReply``): placeholder and reaction at
    once, throttled and coalesced edits (the newest text wins, ``update`` never blocks), the final text always
    lands (rate limits are waited out), long final texts split into parts with ``parts_posted`` journaled after
    each, ``resume_state()``/``restore()`` for the next process, ``retract`` and ``abandon``. A platform implements
    ``Surface``: ``post_placeholder``, ``edit``, ``forget_placeholder``, ``post_part``, ``delete``, ``classify``,
    ``state`` and ``has_placeholder``; optionally ``restore``, ``prepare`` (a restored reply's first look at the
    chat), ``close``, ``react``/``unreact``, ``parts_out``, ``min_interval_s``, ``label`` and ``error_prefix``.
    ``reply.speaking(bot.i18n.lang_for(message))`` makes the reply's own words (progress line, queue position,
    button labels through ``Surface.lang``) those of the asker's language.

``adapters.kit.longanswers`` — when a final answer goes out as a file (``answer.md``) with a short summary.
    ``LongAnswers(max_messages, table_chars).as_file(text, messages)``, ``file_summary(text, limit)``; the streaming
    reply applies it where ``Surface.posts_files`` (``upload_file``, ``share_file``, optionally ``file_shown``).

``adapters.kit.outbound`` — one outbound-call helper.
    ``await call(attempt, what=..., classify=..., policy=RetryPolicy(...))``: a platform's ``classify`` reads its
    errors as a ``Verdict`` (``Failure.RATE_LIMITED`` with ``retry_after_s``, ``RETRYABLE``, ``PERMANENT``,
    ``GONE``); rate limits wait ``Retry-After`` (``retry_after(headers, ...)`` reads it), network and server
    errors back off with jitter, and ``RetryPolicy`` bounds the retries and the time spent waiting.

``adapters.kit.text`` — text shown the same way everywhere.
    ``progress_text(queue_position, lang)``, ``is_progress_text``/``is_looking`` (any language),
    ``split_text(text, limit)`` (code-fence aware),
    ``streaming_view(text, limit)``, ``size_text(num_bytes)``.

``adapters.kit.intake`` — single-flight intake of platform events (event/message id → core → ack).
    ``Intake(name, wait_s).take(hand_over)`` → ``Outcome``: TAKEN ack, FAILED error ack or none, PENDING none.

``adapters.kit.ratings`` — ``REASONS``: the "what was wrong?" choices after a 👎 (reason recorded, button text),
    the same on every platform; ``reasons(lang)`` and ``reason_text(reason, lang)`` in the asker's language.

``adapters.kit.lazy`` — ``__getattr__ = lazy_exports(__name__, {"XAdapter": "adapters.x.adapter"})`` in a
    platform's ``__init__.py``: its classes load the SDK on first use, so the plug-in costs no SDK import.
"""
