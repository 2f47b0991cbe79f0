"""A synthetic Proxmox VE cluster that writes the real on-disk formats (RRD, dump, /etc/pve).

Entry point: ``simulator.cluster.simulate_cluster(out, nodes, guests, days, seed)`` writes
``out/etc/pve``, ``out/rrd`` (like /var/lib/rrdcached/db) and ``out/status.dump``, ending
at ``simulator.model.SIM_NOW`` (2026-01-01T00:00:00Z), and returns a ``SimulatedCluster``
that can ``advance`` time, ``migrate`` guests, start/stop them and set node maintenance.
"""
