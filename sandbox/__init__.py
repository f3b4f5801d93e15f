"""A Slack-compatible server embedded in peekbot: the loopback Slack the tests drive and the browser sandbox."""
