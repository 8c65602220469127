"""Throughput and memory benchmarks of keras_vae (scripts, not tests); see README.md."""
