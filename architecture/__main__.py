from architecture.render import main
from configuration.errors import run_cli

if __name__ == "__main__":
    run_cli(main, "python -m architecture")
