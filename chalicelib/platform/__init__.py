"""Shared ground of every domain: settings, AWS clients, tables, errors, the HTTP edge, sealing."""
