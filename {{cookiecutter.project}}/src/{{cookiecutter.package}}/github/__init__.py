"""GitHub Actions glue: the pull request comment, the monitoring issue, job summaries, step outputs and
configuration checks.

The stages render their own reports (each has one `markdown` renderer); this package composes them,
cuts them to GitHub's limits and writes what GitHub reads: `$GITHUB_STEP_SUMMARY`, `$GITHUB_OUTPUT`, a
comment or issue body file. The workflows hold no logic of their own, so everything they decide is
here, tested, and runs on a laptop too. Functions take the step's `GitHubContext`
(`settings.env.github`), never `os.environ`.
"""
