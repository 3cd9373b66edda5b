"""What the ``forward`` input and output share: the Forward Protocol v1 codec and handshake (sans I/O)."""
