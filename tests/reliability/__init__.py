"""Reliability and security tests: faults, concurrency, hostile input, no leaks of erased data."""
