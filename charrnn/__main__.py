"""``python -m charrnn`` and the ``charrnn`` command."""

import sys


def main() -> None:
    # `charrnn --version` answers without importing the CLI, and so torch (seconds).
    if sys.argv[1:] == ["--version"]:
        from charrnn import __version__

        print(f"charrnn {__version__}")
        return
    from charrnn.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
