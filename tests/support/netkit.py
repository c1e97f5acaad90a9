"""Real network partitions for fault tests: one network namespace per node.

Layout (all made and removed by the test; nothing touches the host's own interfaces):

    namespace <p>sw : bridge br0  ── veth ── namespace <p>n1 : 10.A.B.1
                                  ── veth ── namespace <p>n2 : 10.A.B.2
                                  ── veth ── namespace <p>n3 : 10.A.B.3
                                  ── veth ── host (the test process): 10.A.B.254, 10.A.B.253

The bridge lives in its own namespace so the host's netfilter (e.g. a Docker host's FORWARD
DROP policy with br_netfilter) cannot interfere. Partitions are iptables DROP rules inside the
node namespaces, so a cut is exactly as real as a pulled cable between two nodes, while the
test process (the adapters) keeps reaching whichever nodes it is allowed to. 10.A.B.253 is a
second host address for adapters that a test cuts off from the whole cluster.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from types import TracebackType

HOST_ADDRESS_OFFSET = 254
CUT_OFF_ADAPTER_OFFSET = 253
# Shortest TCP segment (IP length) treated as an answer: a bare ACK or SYN-ACK with options is
# 52-60 bytes, an HTTP answer (status line + headers) is well over 120.
REPLY_BYTES = 120


def unavailable_reason() -> str | None:
    """Why partition tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (iproute2/iptables; .ci/run installs them)"
    probe = f"cfsprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        rule = [
            "ip",
            "netns",
            "exec",
            probe,
            "iptables",
            "-A",
            "INPUT",
            "-s",
            "10.0.0.1",
            "-j",
            "DROP",
        ]
        done = subprocess.run(rule, capture_output=True, text=True)
        if done.returncode != 0:
            return f"iptables does not work in a namespace: {done.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


class Network:
    """Namespaces for ``size`` nodes on a private /24; a context manager that removes them."""

    def __init__(self, size: int = 3) -> None:
        self.size = size
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.prefix = f"cfs{tag}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
        self.switch = f"{self.prefix}sw"
        self.namespaces = [f"{self.prefix}n{i + 1}" for i in range(size)]
        self._host_link = f"{self.prefix}h"
        self._made: list[str] = []

    def address(self, index: int) -> str:
        return f"{self.subnet}.{index + 1}"

    @property
    def cut_off_source(self) -> str:
        """A host-side source address for adapters that ``isolate_source`` cuts off."""
        return f"{self.subnet}.{CUT_OFF_ADAPTER_OFFSET}"

    def placement(self) -> list[tuple[str, str | None]]:
        return [(self.address(i), ns) for i, ns in enumerate(self.namespaces)]

    def __enter__(self) -> Network:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _build(self) -> None:
        self._namespace(self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for i, ns in enumerate(self.namespaces):
            self._namespace(ns)
            self._plug(f"{self.prefix}v{i + 1}", ns, f"{self.address(i)}/24")
        # The host end: the test process reaches the nodes through it.
        _run(
            "ip",
            "link",
            "add",
            self._host_link,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            self.switch,
        )
        self._attach("up0")
        host = f"{self.subnet}.{HOST_ADDRESS_OFFSET}/24"
        _run("ip", "addr", "add", host, "dev", self._host_link)
        _run("ip", "addr", "add", f"{self.cut_off_source}/32", "dev", self._host_link)
        _run("ip", "link", "set", self._host_link, "up")

    def _namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _plug(self, link: str, ns: str, address: str) -> None:
        """A veth from the switch's bridge into ``ns`` carrying ``address``."""
        _run(
            "ip",
            "-n",
            self.switch,
            "link",
            "add",
            link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        self._attach(link)
        _run("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")

    def _attach(self, link: str) -> None:
        _run("ip", "-n", self.switch, "link", "set", link, "master", "br0")
        _run("ip", "-n", self.switch, "link", "set", link, "up")

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self._host_link], capture_output=True)
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._made.clear()

    # ----------------------------------------------------------------- faults

    def cut(self, a: int, b: int) -> None:
        """Drop all traffic between nodes ``a`` and ``b`` (both directions, both ends)."""
        for here, there in ((a, b), (b, a)):
            self._iptables(here, "-A", "INPUT", "-s", self.address(there), "-j", "DROP")
            self._iptables(here, "-A", "OUTPUT", "-d", self.address(there), "-j", "DROP")

    def isolate_source(self, source: str) -> None:
        """Every node drops traffic from and to host address ``source`` (an adapter's)."""
        for i in range(self.size):
            self._iptables(i, "-A", "INPUT", "-s", source, "-j", "DROP")
            self._iptables(i, "-A", "OUTPUT", "-d", source, "-j", "DROP")

    def uncut(self, a: int, b: int) -> None:
        """Undo ``cut(a, b)`` alone, leaving every other rule in place (flapping links)."""
        for here, there in ((a, b), (b, a)):
            self._iptables_quiet(here, "-D", "INPUT", "-s", self.address(there), "-j", "DROP")
            self._iptables_quiet(here, "-D", "OUTPUT", "-d", self.address(there), "-j", "DROP")

    def cut_one_way(self, a: int, b: int) -> None:
        """Drop what node ``a`` sends to node ``b``; ``b`` still reaches ``a`` (an asymmetric
        link: TCP from ``b`` gets no answers, TCP from ``a`` gets no handshake)."""
        self._iptables(a, "-A", "OUTPUT", "-d", self.address(b), "-j", "DROP")
        self._iptables(b, "-A", "INPUT", "-s", self.address(a), "-j", "DROP")

    def drop_replies_to(self, source: str, api_ports: list[int]) -> None:
        """Every node drops the *answers* its API sends to host address ``source``: TCP
        handshakes and acknowledgements pass (segments shorter than ``REPLY_BYTES``), so a
        request on an open connection reaches the node and is processed, and its answer is
        lost on the way back (the lost-answer fault of issue 13)."""
        for i in range(self.size):
            for port in api_ports:
                self._iptables(
                    i, "-A", "OUTPUT", "-d", source, "-p", "tcp", "--sport", str(port),
                    "-m", "length", "--length", f"{REPLY_BYTES}:65535", "-j", "DROP",
                )  # fmt: skip

    def heal(self) -> None:
        for i in range(self.size):
            self._iptables(i, "-F", "INPUT")
            self._iptables(i, "-F", "OUTPUT")

    def _iptables(self, index: int, *rule: str) -> None:
        _run("ip", "netns", "exec", self.namespaces[index], "iptables", *rule)

    def _iptables_quiet(self, index: int, *rule: str) -> None:
        """A rule change that may find nothing to do (deleting a rule already gone)."""
        command = ["ip", "netns", "exec", self.namespaces[index], "iptables", *rule]
        subprocess.run(command, capture_output=True)
