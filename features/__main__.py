"""Entry point: `python -m features ...`, or unchanged `spark-submit features/__main__.py ...`."""

import sys
from pathlib import Path

if not __package__:  # spark-submit runs this file as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration.errors import run_cli
from features.cli import main

if __name__ == "__main__":
    run_cli(main, "features")
