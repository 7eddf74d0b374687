"""The webhook ingest service: `mailstream ingest` (aiohttp app, Kafka producer, metrics)."""
