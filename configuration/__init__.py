"""Settings and shared plumbing of sparkmaker (see settings.py)."""
