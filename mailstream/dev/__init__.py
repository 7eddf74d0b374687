"""Development tooling: a local Kafka broker from Maven Central jars, cluster provisioning for
tests and benchmarks, and the demo. Nothing in the core, the connectors or the streams imports
it (tests/unit/test_layering.py)."""
