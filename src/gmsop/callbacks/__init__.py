"""Lightning callbacks (and the CSV logger and checkpoint IO) a run uses, one job to a file.

Every use of a private attribute of Lightning is in this folder, most through
`lightning_internals`, which lists each with the Lightning version it was written against.
Importing this package imports none of its modules: configs name them (`_target_`) and the
training room imports what it uses.
"""
