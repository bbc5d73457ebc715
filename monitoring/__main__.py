"""Entry point: `python -m monitoring ...`."""

from configuration.errors import run_cli
from monitoring.cli import main

if __name__ == "__main__":
    run_cli(main, "monitoring")
