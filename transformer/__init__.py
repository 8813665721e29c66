"""Sentiment transformer: a Redis-caching KServe transformer in front of the predictor."""
