"""The run: the layer-by-layer pipeline driver (``pipeline``, with ``blocks``, ``layers``,
``measure``, ``save``), the method registry (``methods``, ``alpha``), how a run stops
(``stop``), the forward-pass plumbing and model-family adapters it walks blocks with (``capture``,
``discovery``, ``adapters``; fused MoE experts: ``experts``, ``routed``), perplexity and
evaluation, and the pre-flight checks and estimate."""
