"""Domain code of Runner: everything below the HTTP routes of app.py."""
