"""mailstream: email engagement and deliverability events on Kafka."""

__version__ = "0.1.0"
