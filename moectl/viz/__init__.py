"""Figures (matplotlib), the token-routing page and the HTML report."""
