"""lightning_seg."""
