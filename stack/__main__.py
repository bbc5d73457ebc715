from configuration.errors import run_cli
from stack.local import main

if __name__ == "__main__":
    run_cli(main, "sparkmaker")
