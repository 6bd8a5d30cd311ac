"""Inference only: one folder (or module) per method with its model and config dataclass.

Each is an entry of ``zoo.METHODS`` and follows ``zoo.Method``; training lives in
``fastdiffsr.train`` and is never imported from here.
"""
