"""``python -m lightning_seg`` runs the command line."""

from lightning_seg.entry import main

raise SystemExit(main())
