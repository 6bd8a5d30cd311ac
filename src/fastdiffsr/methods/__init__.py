"""Methods: one folder (or file) each. The registry is the explicit dict in ``fastdiffsr.zoo``."""
