"""Architecture diagrams as code: `python -m architecture` renders them (see README.md here)."""
