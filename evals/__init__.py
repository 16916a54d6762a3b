"""`python -m evals`: task metrics with CIs, LLM-eval suites, bias audit and the release gate."""
