"""Who is calling: bearer tokens, users and their passwords, service accounts."""
