"""Sentiment predictor: a KServe model serving a Hugging Face sequence classifier."""
