"""What an operator needs to install glia: config reference, etcd bootstrap, systemd units."""
