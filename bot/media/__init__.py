"""Opening untrusted files: images (Pillow) and PDFs (pypdfium2) to pictures and text, bounded. No torch.

``files.load_attachment`` is the entry point (``images`` or ``pdf`` behind it, sharing ``pictures`` and ``wording``;
``sniff`` tells the kinds apart); ``pool.MediaPool`` runs it, and the PDF page functions, in worker processes.
"""
