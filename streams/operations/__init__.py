"""Operator tools: replay, dead letters, manual suppression, topic creation, and starting the
project's services as processes."""
