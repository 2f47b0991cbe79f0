"""A synthetic Proxmox VE cluster that writes the real on-disk formats (RRD, dump, /etc/pve)."""
