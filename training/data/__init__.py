"""The training data path: shards in an exact, elastic order, decoded, augmented and batched.

- ``order``: the data order, a pure function of the index, seed, epoch and global batch.
- ``stream``: ``MattingStream``, one rank's samples of an epoch read in that order.
- ``decode_cache``: a loader process's cache of decoded foregrounds and mattes.
- ``augment``: crops, trimaps and flips on uint8 arrays; ``compose_batch`` on the device.
- ``batching``: ``make_loader``, ``batches``, ``epoch_batches``, ``device_inputs``.
- ``throughput``: ``indexnet train --data-only``, the data path alone, timed.
"""
