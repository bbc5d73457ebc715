"""The local stack behind start.sh, stop.sh, restart.sh and reset.sh: `python -m stack` (see local.py)."""
