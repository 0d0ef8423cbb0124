"""The run: the layer-by-layer pipeline driver, the forward-pass plumbing and model-family
adapters it walks blocks with, perplexity and evaluation, and the pre-flight estimate."""
