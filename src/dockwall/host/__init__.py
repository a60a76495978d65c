"""Reading the Docker host, the edge before the compiler: a snapshot over the Engine API
(snapshot), dockerd's cgroup for docker-proxy's sockets (proxy_sockets), whether Docker's NAT
is there (published_path), which interface a source is routed from (routes)."""
