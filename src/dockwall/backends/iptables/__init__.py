"""The iptables backend: iptables-restore/ip6tables-restore, one transaction per family."""
