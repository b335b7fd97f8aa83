"""``python -m charrnn`` and the ``charrnn`` command."""

import sys
import time

STARTED = time.monotonic()  # the command's start: a time budget counts the imports too


def main() -> None:
    # `charrnn --version` answers without importing the CLI, and so torch (seconds).
    if sys.argv[1:] == ["--version"]:
        from charrnn import __version__

        print(f"charrnn {__version__}")
        return
    from charrnn import cli

    cli.main(STARTED)


if __name__ == "__main__":
    main()
