"""Synthetic-fraction estimators (supervised probe and unsupervised mixture-proportion estimation)."""
