"""Hosts: where commands run (locally, behind a prefix, over ssh), the registry of the ops
file's hosts, what a host can tell (disk, memory, Python), and the primitives on top."""
