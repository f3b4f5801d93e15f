"""Fixtures of the end-to-end tests: ``sandbox``, a running ``peekbot sandbox`` on the tiny model."""

from tests.support.sandbox_support import sandbox  # noqa: F401
