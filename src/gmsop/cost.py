"""Entry point: `python -m gmsop.cost` (see gmsop.analysis.cost)."""

from gmsop.analysis.cost import main

if __name__ == "__main__":
    main()
