"""Reusable network blocks shared by the methods."""
