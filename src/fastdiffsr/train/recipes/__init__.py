"""Training recipes, one module per method (``latent`` holds the stages YONOS-SR and
Edge-SD-SR share); registered in ``fastdiffsr.train.registry``."""
