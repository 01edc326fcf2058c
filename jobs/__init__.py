"""Job functions run by the worker, with their typed argument and result models.

Each job takes arq's ``ctx`` and one validated arguments model. This package never imports ``worker``.
"""
