"""Reports: a deployment's audit trail for auditors, DORA figures, and the PNG chart."""
