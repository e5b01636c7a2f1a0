"""On-disk and in-memory event formats: the event batch, Parquet helpers, labelled datasets.

Layer: imports only `errors`, `physics` and `config` from the package (docs/architecture.md).
"""
