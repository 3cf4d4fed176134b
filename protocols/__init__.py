"""genshift: protocols."""
