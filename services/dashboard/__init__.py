"""The dashboard's domain side: what one person sees (a snapshot of services, deployments,
sign-offs, alerts, flags and DORA figures) and the one-time login links the bot hands out.
Telegram-free: the HTTP side (bot/http/dashboard) signs people in and serves the page."""
