"""``python -m lightning_seg`` runs the command line."""

from lightning_seg.cli import main

raise SystemExit(main())
