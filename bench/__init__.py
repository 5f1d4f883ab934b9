"""``xinfang bench``: the system's speed at drive scale against a raw nats-py baseline (docs/benchmarks.md)."""
