"""genshift: benchmark."""
