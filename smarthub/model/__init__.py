"""The classifier: architectures and weights, embeddings, training, model runs and prediction."""
