"""Entry point: `python -m gmsop.report` (see gmsop.analysis.report)."""

from gmsop.analysis.report import main

if __name__ == "__main__":
    main()
