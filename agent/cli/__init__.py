"""Command-line front ends over the rooms of ``agent``."""
