"""`cfs simulate`: many emulated adapters in one process, measuring data continuity.

``settings`` says what a run does, ``adapters`` emulates the adapters and the sink, ``run``
orchestrates, ``stats`` and ``report`` compute and print the figures; the command line is
``cfs_cluster.cli.simulate``.

Each group has one data source producing a sequence-numbered value every ``interval`` seconds
(one per second by default). Every adapter of the group sees every value, as redundant
collectors reading one device do; only the adapter whose agent holds the Primary grant sends
values to the sink, which the simulator owns and counts. Per mode (spec §4.6):

- hot: secondaries collect into a HotBuffer, trimmed with the group's LastDataProcessedTime
  minus T/2; on promotion they flush it, so a primary crash costs duplicates, not gaps;
- warm / cold: secondaries do not collect; a promoted adapter starts with the next value, so the
  values produced during the takeover are lost (cold also starts from a standby score of 1).

Adapters start at random moments within the first T/2, so their heartbeats are out of phase as
in a real fleet and the takeover times spread over what a crash at a random moment costs.
``--fail-primary-after`` crashes each group's primary at that moment: its agent stops without
unregistering, like a killed process. The summary reports, per mode, failovers (the Primary role
moving to another adapter), takeover time (crash to the next adapter's Primary grant), gaps
(sequence numbers the sink never received) and duplicates (deliveries beyond the first), all
counted from the sink and the adapters' role changes, never assumed.
"""

from cfs_cluster.simulator.adapters import AdapterRoleChange
from cfs_cluster.simulator.report import format_report
from cfs_cluster.simulator.run import run_simulation
from cfs_cluster.simulator.settings import SimulationSettings
from cfs_cluster.simulator.stats import Continuity, Takeovers, continuity, spread, takeovers

__all__ = [
    "AdapterRoleChange",
    "Continuity",
    "SimulationSettings",
    "Takeovers",
    "continuity",
    "format_report",
    "run_simulation",
    "spread",
    "takeovers",
]
