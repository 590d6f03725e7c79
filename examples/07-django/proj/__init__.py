"""A small shop: the Django project of example 07."""
