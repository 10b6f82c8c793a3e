"""etcd v3 kvstore access: client, key layout, list-watch reflectors."""
