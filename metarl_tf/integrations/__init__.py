"""Adapters to other ecosystems' protocols (Meta-World's evaluation: ``integrations.metaworld``)."""
