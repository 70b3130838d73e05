"""Click logs and session files → sessions, samples and the item vocabulary."""
