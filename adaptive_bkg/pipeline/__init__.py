"""Running a production: the run plan, the batch step shared by the Ray driver
(`orchestrate`, the only module that imports Ray) and the serial replay driver, budgets,
the live view and pre-flight checks.

Layer: imports `stages` and everything below it (docs/architecture.md).
"""
