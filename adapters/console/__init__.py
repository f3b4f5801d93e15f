"""The console adapter: ask questions about local files from a terminal (``peekbot chat``)."""

from adapters.console.adapter import ConsoleAdapter, ConsoleReply

__all__ = ["ConsoleAdapter", "ConsoleReply"]
