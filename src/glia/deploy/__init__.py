"""What an operator needs to install glia on hosts: config reference, etcd bootstrap, systemd units."""
