"""A Slack-compatible server embedded in peekbot: the loopback Slack the tests drive and the browser sandbox."""

DEFAULT_PORT = 8765
"""Where ``peekbot sandbox`` serves its page unless ``--port`` says otherwise."""
