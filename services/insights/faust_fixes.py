"""Two fixes to faust-streaming 0.15's consumer, without which a rebalance can commit past messages no
agent ever received (upstream faust-streaming/faust#606 is the gap half; the seek half is unreported).

1. `Consumer.perform_seek` (seek every partition back to its committed offset) runs while the flow is
   still active: always after a table recovery (faust's code also does so for a table-less worker
   whose previous assignment was empty; a test of that hand-over lost nothing even without this
   fix). The fetcher keeps delivering into the agents' queues during the seek; the caller's
   `flow_control.resume()` right after it empties those queues, while the Kafka client's position
   is already past them, so they are never read again. The flow is now stopped for the seek (every
   caller resumes it right after).
2. A jump in offsets (a "gap") is taken as acknowledged, so the next commit covers it. Our sources are
   neither compacted nor transactional: a gap here only ever means "read but not delivered", and now
   holds commits back instead (the messages come again after a restart) rather than losing them.

Applied once, by `faust_app`. faust is pinned below 0.16 in pyproject.toml: these replace internals.
"""
from __future__ import annotations

import asyncio

from faust.transport import consumer as faust_consumer

_faust_perform_seek = faust_consumer.Consumer.perform_seek
_TURNS_TO_DRAIN = 5  # loop turns for the fetch loop to see suspend_flow and abandon its in-flight message


async def _perform_seek_without_flow(self) -> None:
    if self.flow_active:
        self.stop_flow()
        self.app.flow_control.suspend()
        for _ in range(_TURNS_TO_DRAIN):
            await asyncio.sleep(0)
    await _faust_perform_seek(self)


async def _no_gap_is_acknowledged(self, tp, offset_from: int, offset_to: int) -> None:
    return None


def apply() -> None:
    if faust_consumer.Consumer.perform_seek is not _perform_seek_without_flow:
        faust_consumer.Consumer.perform_seek = _perform_seek_without_flow
        faust_consumer.Consumer._add_gap = _no_gap_is_acknowledged
