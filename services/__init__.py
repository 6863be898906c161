"""The domain, Telegram-free: one package per capability, plus the few things they share.

    deploy/     the request front door, deployments, the pipeline and its steps, strategies,
                pre-checks, watch, hooks, drills, recovery, rollback points, windows, locks
    releases/   release directories on a host: build, layout, queries
    approvals/  sign-off requests, checklists and their timers
    hosts/      where commands run: local, prefixed, over ssh; host facts and primitives
    control/    systemd and supervisord, health checks, process metrics, blue-green traffic
    alerts/     intake, grouping, routing, silences, the outbox, opsgate's own monitor
    flags/      feature flags, bucketing, staged plans, OFREP and flagd serving
    records/    storage, migrations, the audit log, retention and backups
    reports/    the audit export, DORA figures, charts

Shared: `errors` (the one error base), `progress` (steps reported to a listener),
`container` (the wired services), `runtime` (what the running process knows of itself).
"""
