"""Callbacks: notices of events and status changes, and the signed webhook sender."""
