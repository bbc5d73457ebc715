"""Architecture diagrams as code: `python -m configuration.diagrams` renders them (see README.md here)."""
