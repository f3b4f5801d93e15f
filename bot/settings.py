"""Configuration: environment variables, optionally a TOML file with the same keys.

One class per section: the core's sections live here (``PEEKBOT_MODEL`` …); each chat platform keeps its own
section class beside its adapter (``SLACK_BOT_TOKEN`` in ``adapters/slack/settings.py``) and loads it with
:meth:`Settings.section`. A TOML file named by ``PEEKBOT_CONFIG`` (or ``--config``) may set the same keys, e.g.
``PEEKBOT_MODEL = "Qwen/Qwen3-VL-4B-Instruct"``. Environment variables win over the file.
"""

from __future__ import annotations

import contextvars
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, overload

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "PEEKBOT_CONFIG"
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("peekbot_config_file", default=None)


class _TomlKeys(PydanticBaseSettingsSource):
    """Reads env-style keys (``PEEKBOT_MODEL``) from a TOML file, case-insensitively."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        data: dict[str, Any] = {}
        if path is not None:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        self._data = {k.upper(): v for k, v in data.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        prefix = self.settings_cls.model_config.get("env_prefix", "")
        key = f"{prefix}{field_name}".upper()
        return self._data.get(key), key, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        return values


class SettingsSection(BaseSettings):
    """One section of the configuration: its variables share a prefix (``PEEKBOT_`` unless the section says
    otherwise) and the TOML file may set the same keys. Platforms define their own sections beside their adapters
    and load them with :meth:`Settings.section`."""

    model_config = SettingsConfigDict(env_prefix="PEEKBOT_", extra="ignore", case_sensitive=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get() or os.environ.get(CONFIG_ENV)
        toml = _TomlKeys(settings_cls, Path(path).expanduser() if path else None)
        return init_settings, env_settings, toml


def comma_list(value: Any) -> Any:
    """A field validator (``mode="before"``): ``"a, b,"`` → ``["a", "b"]``."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CoreSettings(SettingsSection):
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".peekbot")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    store_url: str | None = None
    backend: Literal["transformers", "openai"] = "transformers"
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    openai_max_concurrency: int = 8
    """Answers streamed from the remote server at once; more wait in the queue (``PEEKBOT_QUEUE_LIMIT``)."""
    openai_connect_timeout_s: float = 10.0
    openai_stall_timeout_s: float = 60.0
    """Once an answer streams, no data from the server for this long fails it (the deadline bounds the rest)."""
    openai_retries: int = 3
    """Retries after connection errors, 429 and 5xx, only before the first text arrived."""
    openai_retry_backoff_s: float = 0.5
    """First retry delay; doubled per retry (a 429's Retry-After wins)."""
    openai_image_format: Literal["png", "jpeg"] = "png"
    """How images travel in the data URLs: ``png`` (lossless, screenshots) or ``jpeg`` (smaller, photos)."""
    admins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    max_question_chars: int = 4000
    max_instructions_chars: int = 2000
    """The longest per-channel instructions an admin may set (``/instructions set …``)."""
    answer_file_after_messages: int = 3
    """A final answer that would take more chat messages than this is posted as a file (answer.md) with a short
    summary in the message; ``0`` never posts a file."""
    answer_file_table_chars: int = 120
    """A final answer with a Markdown table row wider than this is posted as a file too; ``0`` turns this off."""
    drain_timeout_s: float = 30.0
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """Names this process in the job journal's leases (several replicas share one store)."""
    job_lease_s: float = 60.0
    """A job whose owner stops renewing its lease for this long is taken over by another process."""
    max_job_attempts: int = 3
    """A question that was interrupted this many times (crashes, restarts) is answered with an apology."""
    dedupe_ttl_s: float = 24 * 3600.0
    intake_wait_s: float = 5.0
    """How long a copy of an event or message that arrives while an earlier copy is being handed to the core waits
    for that copy's outcome; past it the copy is left unacked and the platform delivers it again."""
    conversation_retention_days: float = 30.0
    """Turns, files and documents of a conversation idle for longer are deleted."""
    audit_retention_days: float = 90.0
    answer_cache_ttl_s: float = 24 * 3600.0
    """An identical question on identical images in the same conversation is answered from cache this long."""
    store_synchronous: Literal["normal", "full"] = "normal"
    """SQLite fsync policy: ``normal`` survives process crashes and kills; ``full`` also power loss (slower)."""

    _split_admins = field_validator("admins", mode="before")(comma_list)

    def is_admin(self, user_key: str) -> bool:
        return user_key in self.admins


class EngineSettings(SettingsSection):
    model: str = "Qwen/Qwen3-VL-4B-Instruct"
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    quantization: Literal["none", "4bit", "8bit"] = "none"
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    max_pixels: int = 1920 * 1080
    min_pixels: int = 64 * 64
    max_batch_size: int = 16
    """Rows decoded together (questions being prefilled count too). Rows are cheap where decoding is bound by memory
    bandwidth (a GPU): more of them let a question that arrives during a burst join at the next step instead of
    waiting for an answer to end; ``max_batch_tokens`` bounds the memory they take."""
    max_batch_tokens: int = 32768
    """Padded KV-cache positions of the running batch: rows × its cache length (a lone question always runs)."""
    scheduling: Literal["continuous", "static"] = "continuous"
    """``continuous``: a question joins the running batch at the next decoding step; ``static``: only once the batch
    is empty (the classic dynamic batch, kept for comparison)."""
    prefill_chunk_tokens: int = 512
    """Prompt tokens prefilled between two decoding steps while others decode (one image's vision pass counts as one
    such unit): bounds the running answers' inter-token latency; 0: whole prompts."""
    image_cache_bytes: int | None = None
    """Budget of the cache of the vision encoder's output per image (follow-ups about the same picture skip the
    encoder); unset: a tenth of the GPU memory free after loading (at most 4 GiB), 256 MiB on CPU; 0: off."""
    prefix_cache_bytes: int | None = None
    """Budget of the cache of finished prompts' keys/values (a follow-up whose prompt starts with an earlier prompt
    prefills only the rest); unset: sized like ``image_cache_bytes``; 0: off."""
    queue_limit: int = 32
    max_new_tokens: int = 512
    sampling: Literal["auto", "greedy"] = "auto"
    """``auto``: pick tokens as the checkpoint's ``generation_config.json`` says (temperature, top_k, top_p), seeded
    per question so a retried answer repeats its text; ``greedy``: always the most likely token (deterministic)."""
    request_timeout_s: float = 300.0
    system_prompt: str = (
        "You are peekbot, a helpful assistant in a company chat. People send you screenshots, photos and "
        "documents and ask about them. Answer concisely and accurately, and always answer in the language "
        "of the question."
    )
    warmup: bool = True
    device_map: str | None = None
    """Passed to ``from_pretrained`` (e.g. ``auto`` to spread a large model over several GPUs); unset: ``device``."""
    batch_window_s: float = 0.003
    """How long an idle worker waits for more arrivals before starting a batch (bursts share one batch)."""
    stop_timeout_s: float = 30.0
    """On stop, how long the running batch may finish before its requests are cancelled."""
    cpu_threads: int | None = None
    """torch intra-op threads (process-wide) when set; 1 avoids thread thrashing on small, shared CPUs."""
    context_token_budget: int = 12000
    """Estimated prompt tokens a question may use; older thread turns and images are left out beyond it."""


class ImageSettings(SettingsSection):
    max_file_bytes: int = 25 * 1024 * 1024
    max_decode_pixels: int = 64_000_000
    max_decode_bytes: int = 256 * 1024 * 1024
    """Memory one image's decoder may take, checked before any pixel is decoded: pixels × bytes per pixel (1 for
    1-bit, grey and palette, 2 for 16-bit grey, 4 otherwise) × the full-size buffers its format's decoder holds,
    plus the coefficients of a progressive JPEG."""
    media_workers: int = 2
    """Worker processes that open files (Pillow, PDFium); each opens one file at a time."""
    media_memory_limit_mb: int = 1024
    """Address-space limit (RLIMIT_AS) of each worker process: a file that needs more is refused with a reason."""
    media_time_limit_s: float = 12.0
    """Wall-clock and CPU limit for opening one file (or one step of a long document) in a worker process."""
    min_image_side: int = 8
    max_aspect_ratio: float = 8.0
    max_tiles: int = 4
    max_images_per_question: int = 8
    pdf_max_pages: int = 8
    pdf_max_dpi: int = 200
    pdf_max_text_pages: int = 300
    """Pages whose text layer is extracted (for document search); may exceed the pages rendered."""
    pdf_time_budget_s: float = 8.0
    """Wall-clock budget for a question's PDF work (drawing, text layer), checked before each page; pages past it
    are skipped with a note. Kept below ``media_time_limit_s`` so a slow PDF stops itself before it is killed."""
    pdf_max_objects: int = 1_000_000
    """Drawing objects (paths, text runs, images) parsed per PDF and step; pages past this are left unread."""
    doc_pages_per_question: int = 4
    """Pages of a long document (more pages than one question carries) sent with each question."""
    transcribe_pages_per_question: int = 20
    """Scanned pages (no text layer) the model transcribes for search per question; the rest wait for later ones."""
    transcribe_max_new_tokens: int = 384
    """Length cap of one page transcription."""
    doc_text_chars_per_question: int = 12_000
    """Text of Office and text files sent with one question; a file with more is searched part by part."""
    doc_text_chars_per_part: int = 3_000
    """Size of one searchable part of a text file, a section or a page of text (longer sections are cut)."""
    doc_sheet_rows_per_part: int = 40
    """Rows of a sheet (or CSV file) in one searchable part, sent under the sheet's header row."""
    doc_max_parts: int = 2_000
    """Parts (slides, sheet blocks, sections, pages of text) read from one file; the rest is left out with a note."""
    doc_max_cells: int = 600_000
    """Sheet cells read from one workbook or CSV file; reading stops there with a note."""
    doc_max_unpacked_mb: int = 256
    """Decompressed size an Office file (a ZIP) may declare, checked before it is opened."""
    doc_max_zip_entries: int = 5_000
    """Entries an Office file's ZIP may have, checked before it is opened."""


class SchedulerSettings(SettingsSection):
    cleanup_interval_s: float = 60.0
    health_interval_s: float = 60.0
    watchdog_interval_s: float = 30.0
    expiry_interval_s: float = 3600.0
    snapshot_interval_s: float = 10.0
    # Memory cleanup: empty the CUDA cache when either threshold is passed (gc.collect always runs).
    cleanup_fragmentation: float = 0.30
    """Fragmentation (1 − allocated/reserved) above which cached GPU blocks are released."""
    cleanup_unused_reserved_bytes: int = 1 << 30
    """Reserved-but-unallocated GPU bytes above which cached GPU blocks are released."""
    cleanup_timeout_s: float = 60.0
    # Health: the engine liveness ping and the connection watchdog.
    liveness_timeout_s: float = 30.0
    """A ping that does not come back from the model's worker thread within this time marks the engine stuck."""
    engine_stuck_exit_s: float = 180.0
    """A model worker stuck this long (pings unanswered, no token generated) fails ``/healthz`` and ends the process
    with exit code 75 for its supervisor to restart it; 0 never exits. A long batch that generates is not stuck."""
    watchdog_stale_after_s: float = 300.0
    """An adapter whose last pong is older than this is reconnected at once."""
    watchdog_disconnected_checks: int = 2
    """Checks in a row an adapter must be seen disconnected before a forced reconnect (its own reconnect goes first)."""
    watchdog_reconnect_timeout_s: float = 60.0
    snapshot_history_s: float = 3600.0
    """How far back the status page's charts reach."""
    usage_retention_days: int = 30


class AccessSettings(SettingsSection):
    """Who may ask (allowlists, mode) and how often (rate limit, daily quota, pending questions per user).

    Allowlist entries are ``platform:id`` (``slack:T123``, ``feishu:oc_abc``, ``slack:U42``); an empty list
    lets everyone in.
    """

    allowed_workspaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Slack workspaces (team ids) / Feishu tenants (tenant keys)."""
    allowed_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Group channels / chats; direct messages are governed by ``allowed_users`` alone."""
    allowed_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Users (admins are always allowed)."""
    access_mode: Literal["dm_only", "mention_only", "everyone"] = "everyone"
    access_contact: str = ""
    """Whom refused people should ask for access (e.g. ``#it-help``); empty: "the people who run peekbot"."""
    rate_limit_per_minute: float = 6.0
    """Questions per minute per user (token bucket refill); 0 turns the rate limit off."""
    rate_limit_burst: int = 3
    """Questions a user may ask at once before the per-minute rate applies."""
    daily_quota: int = 0
    """Answered questions per user per day; 0 turns the quota off."""
    quota_timezone: str = ""
    """IANA zone whose midnight resets the daily quota (e.g. ``Europe/Berlin``); empty: the server's local time."""
    max_pending_per_user: int = 10
    """Unanswered questions one user may have queued or running at once."""

    _split_lists = field_validator("allowed_workspaces", "allowed_channels", "allowed_users", mode="before")(
        comma_list
    )

    @field_validator("allowed_workspaces", "allowed_channels", "allowed_users")
    @classmethod
    def _entries_name_their_platform(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            platform, _, ident = entry.partition(":")
            if not platform or not ident:
                raise ValueError(f"allowlist entry {entry!r} must be platform:id, e.g. slack:{entry or 'T123'}")
        return entries

    @field_validator("quota_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        if name:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc
        return name


LayerT = TypeVar("LayerT", bound=SettingsSection)


class _CoreSection(Generic[LayerT]):
    """A core section as an attribute of ``Settings`` (``settings.core``): loaded when first read, then kept in the
    instance; assigning the attribute replaces it (tests, benchmarks)."""

    def __init__(self, layer: type[LayerT]) -> None:
        self._layer = layer
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, settings: None, owner: type) -> Self: ...

    @overload
    def __get__(self, settings: Settings, owner: type | None = None) -> LayerT: ...

    def __get__(self, settings: Settings | None, owner: type | None = None) -> LayerT | Self:
        if settings is None:
            return self
        loaded = settings.__dict__[self._name] = settings._load(self._layer)
        return loaded


class Settings:
    """All sections, each loaded once when first read. ``config_file`` overrides ``PEEKBOT_CONFIG``."""

    core = _CoreSection(CoreSettings)
    engine = _CoreSection(EngineSettings)
    images = _CoreSection(ImageSettings)
    scheduler = _CoreSection(SchedulerSettings)
    access = _CoreSection(AccessSettings)

    def __init__(self, config_file: str | Path | None = None) -> None:
        self.config_file = Path(config_file) if config_file is not None else None
        self._sections: dict[type[SettingsSection], SettingsSection] = {}

    def section(self, section: type[LayerT]) -> LayerT:
        """The section of this class (a platform's, e.g. ``SlackSettings``), loaded once from the environment and the
        configuration file. Raises pydantic's ``ValidationError`` for a value of the wrong kind."""
        loaded = self._sections.get(section)
        if loaded is None:
            loaded = self._sections[section] = self._load(section)
        assert isinstance(loaded, section)
        return loaded

    def use_section(self, section: SettingsSection) -> None:
        """Use these values for their section instead of loading them (tests, benchmarks)."""
        self._sections[type(section)] = section

    @property
    def sections(self) -> list[SettingsSection]:
        """The sections read through :meth:`section` so far (the composition root reads every platform's at start)."""
        return list(self._sections.values())

    def _load(self, layer: type[LayerT]) -> LayerT:
        token = _config_file.set(self.config_file)
        try:
            return layer()
        finally:
            _config_file.reset(token)
