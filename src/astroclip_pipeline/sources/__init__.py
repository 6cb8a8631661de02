"""Where the raw shards come from: the mock survey now, the real DESI/Legacy Survey services later."""
