from configuration.errors import run_cli
from pipeline.cli import main

if __name__ == "__main__":
    run_cli(main, "pipeline")
