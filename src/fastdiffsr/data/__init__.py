"""Datasets: HR folders with on-the-fly LR, paired benchmark folders."""
