"""Evaluation: run a model and baselines over a manifest, score with bootstrap CIs, render reports.

runner (the `cxrlm eval` loop, resumable), scoring (rows -> metrics), baselines, render (Markdown/HTML).
"""
