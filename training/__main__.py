"""`python -m training ...`: see training/cli.py (or `python -m training --help`)."""

import os

# OpenMP threads that spin while waiting are ruinous on a shared or oversubscribed machine
# (measured: 24 s instead of 7 s for the same fit with another job running). Set before
# XGBoost loads libgomp; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from configuration.errors import run_cli
from training.cli import main

if __name__ == "__main__":
    run_cli(main, "training")
