"""The console adapter: ask questions about local files from a terminal (``peekbot chat``)."""

from adapters.console.adapter import OUTPUT_CLOSED, ConsoleAdapter, ConsoleReply

__all__ = ["OUTPUT_CLOSED", "ConsoleAdapter", "ConsoleReply"]
