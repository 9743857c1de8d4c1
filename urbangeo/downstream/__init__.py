"""Downstream tasks on region embeddings: indicators, prediction, clusters, metrics."""
