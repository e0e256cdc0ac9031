"""Blueprints: pages (the one page and settings), photos (intake, timeline, analysis), api (JSON)."""
