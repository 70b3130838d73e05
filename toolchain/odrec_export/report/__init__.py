"""What an artifact costs: bytes per part, latency, memory, side-by-side comparisons, figures."""
