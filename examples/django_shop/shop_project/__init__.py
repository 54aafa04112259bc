"""Project package of the Django example shop."""
