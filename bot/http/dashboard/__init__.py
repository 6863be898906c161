"""The web dashboard and Telegram Mini App at /app/ (routes.py), and who may see it (auth.py)."""
