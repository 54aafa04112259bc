"""Template tags: ``{% load tracklayer %}``."""
