"""Three fixes to faust-streaming 0.15's consumer, without which a rebalance can commit past messages no
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
3. The commit position could still step over one unacknowledged message: faust's head check lets
   the first acknowledged offset be one past the committed one, but a committed offset already names
   the next message to read. The message at the committed offset must be acknowledged first.

Applied once, by `faust_app`. faust is pinned below 0.16 in pyproject.toml: these replace internals.
"""
from __future__ import annotations

import asyncio

from faust.transport import consumer as faust_consumer
from faust.utils.functional import consecutive_numbers

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


def _offset_after_acknowledged_run(self, tp) -> int | None:
    """The offset to commit for `tp`: just past the run of acknowledged offsets that starts at the
    committed one, or None while the message at the committed offset is unacknowledged. (faust's own
    also folded in acknowledged gaps, which no longer exist.)"""
    acked = self._acked[tp]
    if not acked:
        return None
    acked.sort()
    committed = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None
    run = next(consecutive_numbers(acked))
    acked[: len(run)] = []
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def apply() -> None:
    if faust_consumer.Consumer.perform_seek is not _perform_seek_without_flow:
        faust_consumer.Consumer.perform_seek = _perform_seek_without_flow
        faust_consumer.Consumer._add_gap = _no_gap_is_acknowledged
        faust_consumer.Consumer._new_offset = _offset_after_acknowledged_run
