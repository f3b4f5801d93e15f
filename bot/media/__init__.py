"""Opening untrusted files: images (Pillow) and PDFs (pypdfium2) to pictures and text, bounded. No torch."""
