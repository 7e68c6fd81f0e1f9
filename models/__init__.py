"""OxygenREC library: pure torch / numpy / pandas code.

Nothing in this package imports dagster, feast or tritonclient, so every piece can be
tested and reused on its own. The Dagster assets in ``assets/`` are thin wrappers around it.
"""
