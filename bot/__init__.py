"""peekbot core: types, settings, dispatcher and application lifecycle (no platform SDK, no torch)."""
