"""``python -m adamx <command>``: ``check`` prints the parity table of every optimizer against optax and PyTorch;
``demo`` trains a small transformer with adamx, cross-checked against optax (``python -m adamx demo --help``);
``docs`` prints the README's optimizer table from the registry (``--write README.md`` updates it)."""

import sys

COMMANDS = {"check": "adamx.check", "demo": "adamx._demo", "docs": "adamx._docs"}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    print(f"usage: python -m adamx {{{','.join(COMMANDS)}}} [options]\n\n{__doc__}", file=sys.stderr)
    return 2
  import importlib

  return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
  sys.exit(main())
