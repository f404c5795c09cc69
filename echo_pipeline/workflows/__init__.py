"""Workflows: intent parsing, planning, multi-modal tasks and the creative engine (pure Python)."""
