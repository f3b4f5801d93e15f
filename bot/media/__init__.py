"""Opening untrusted files: images (Pillow) and PDFs (pypdfium2) to pictures and text, Office and text files
(python-docx, openpyxl, python-pptx, lxml) to searchable parts, bounded. No torch.

``files.load_attachment`` (images, PDFs) and ``files.read_document`` (Office and text files) are the entry points
(``images``/``pdf`` behind the first, sharing ``pictures`` and ``wording``; ``office``/``text_files`` behind the
second, sharing ``parts``, with ``packages`` guarding Office ZIPs; ``sniff`` tells the kinds apart);
``pool.MediaPool`` runs them, and the PDF page functions, in worker processes.
"""
