"""Entry point: `python -m api [serve|keygen] ...`."""

from configuration.errors import run_cli
from api.cli import main

if __name__ == "__main__":
    run_cli(main, "api")
