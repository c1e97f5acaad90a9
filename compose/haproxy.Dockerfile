# HAProxy image built without a registry: Debian's haproxy package on the debootstrap base
# (compose/images/base.sh). It reads its configuration from the same path as the official
# haproxy image, so docker-compose.yml mounts haproxy.cfg the same way for either image.
# With a registry you may use the official image instead: HAPROXY_IMAGE=haproxy:2.8.
ARG BASE_IMAGE=cfs-base:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy

ARG CFS_REVISION=unknown
LABEL org.opencontainers.image.title="cfs_cluster haproxy" \
      org.opencontainers.image.revision="${CFS_REVISION}"

USER haproxy
# SIGUSR1: soft stop (finish the requests in flight), as in the official image.
STOPSIGNAL SIGUSR1
EXPOSE 5590 8404
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
