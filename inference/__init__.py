"""The engine: images, prompts, model loading, batching, streaming, memory.

The only package that imports torch and transformers, and only lazily: importing ``inference``
(or ``inference.transformers_engine``) stays cheap; the model libraries load when an engine starts.
"""
