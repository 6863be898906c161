"""Dev tooling, not the product: the Bot API sandbox, the demo, the terminal chat, and the
harnesses that start real components (systemd, sshd, nginx, Alertmanager, Prometheus,
supervisord) for the tests and the benchmarks."""
