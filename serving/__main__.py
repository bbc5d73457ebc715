from configuration.errors import run_cli
from serving.cli import main

if __name__ == "__main__":
    run_cli(main, "serving")
