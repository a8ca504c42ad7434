"""Every child process and where it runs: process groups, watchdog, leftovers, ports,
llama-server, nginx, clusters."""
