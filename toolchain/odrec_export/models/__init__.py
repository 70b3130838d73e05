"""Neural modules: the session encoder and the ways items become vectors."""
