"""Deploy: the front door for every change to production, deployments as rows, the
pipeline that runs them (steps, strategies, pre-checks, hooks, verify, watch), drills,
recovery after a restart, rollback points, deploy windows, environment locks and /halt."""
