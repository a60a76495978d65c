# dockwall in a container: `docker compose up -d` with compose.yaml beside this file
# (README.md, "Running it in a container"). The firewall it writes is the host's: the
# container runs in the host's network namespace (compose.yaml says so).
FROM python:3.12-slim

# iptables-nft (Debian's default) writes through nftables, as the host's own iptables does on
# any current distribution; a host whose Docker uses iptables-legacy (`iptables --version`
# says "legacy") must be written with the same: build with --build-arg IPTABLES=legacy and
# share the host's /run/xtables.lock (README.md says how).
ARG IPTABLES=nft
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables ipset \
 && rm -rf /var/lib/apt/lists/* \
 && if [ "$IPTABLES" = legacy ]; then \
        update-alternatives --set iptables /usr/sbin/iptables-legacy \
     && update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy; \
    fi

COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install --no-cache-dir --root-user-action=ignore /src && rm -rf /src

ENTRYPOINT ["dockwall"]
CMD ["run", "-p", "/etc/dockwall/policy.yaml"]
