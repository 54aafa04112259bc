"""Fixtures for the framework integration tests."""

from tests.integrations.django_fixture import django_project

__all__ = ["django_project"]
