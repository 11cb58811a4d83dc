"""One parser per section of fabricd.yaml, each reading a `Value` into its part of the model."""
