"""One module per algorithm family. Public names are re-exported by ``adamx``."""
