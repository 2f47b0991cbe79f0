"""Input: reads what a Proxmox VE cluster writes (RRD files, status dump, /etc/pve) into frames
and builds the cluster snapshot the balancer decides on."""
