"""What the command line calls besides a production: labelling, pretraining and fine-tuning
recipes, the Bayes limit, run checks, comparisons, sweeps, closure and plots.

Layer: imports `pipeline` and everything below it; only `cli` imports it.
"""
