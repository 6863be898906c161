"""Control: systemd units and supervisord programs behind one interface, the controller that
restarts and verifies, health checks, process metrics, and blue-green traffic switching."""
