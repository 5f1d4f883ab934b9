"""Contracts and plumbing shared by every xinfang service (nothing service-specific lives here)."""
