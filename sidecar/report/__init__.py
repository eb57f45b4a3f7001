"""What the outside sees of the runtime: the capability declaration, its registration with the
backend, Prometheus metrics and the hardware."""
