"""Reading finished runs: reports and plots across runs (report), model cost (cost), and the
paper's published numbers (published)."""
