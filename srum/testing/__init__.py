"""Hooks for benches and tests, kept out of the real stages: stand-in stages (orchestration without the CPU) and
fault injection (a process that kills itself at a named point)."""
