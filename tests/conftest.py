"""Test-session settings: one torch thread.

The tests use tiny networks, where a second thread gains nothing; on a shared machine a two-thread op waits for a
descheduled thread on every call (measured: 50x slower), so one thread keeps the suite fast and steady.
"""
import torch

torch.set_num_threads(1)
