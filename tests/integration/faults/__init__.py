"""Fault injection against the real binaries: what the lab does when a part of it fails.

Each test asserts what the user sees (a line, a row, `cluster status`), that no finished row is
lost, and that nothing is left running:
- test_sweep_faults_real: a server frozen mid-cell (SIGSTOP), nginx killed mid-cell,
  --stop-on-error at a hung server;
- test_instance_crash_real: a server killed mid-cell (SIGKILL), as the OOM killer would;
- test_stall_real: a stream whose server goes silent (the stall timeout);
- test_cluster_faults_real: the standing cluster's instance frozen or killed, and one that
  cannot restart;
- test_disk_full_real: the results disk full (a small tmpfs; skipped with its reason where the
  test cannot mount one).
"""
