"""Entry point: `python -m gmsop.sweep` (see gmsop.run.sweep)."""

from gmsop.run.sweep import main

if __name__ == "__main__":
    main()
