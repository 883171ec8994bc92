"""The iocpsvc test suite (twisted.trial test cases; also runs under pytest)."""
