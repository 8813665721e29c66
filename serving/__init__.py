"""What the predictor and the transformer share: errors, protocol shapes, limits, settings, KServe start-up."""
