"""``python -m logfwd``: the same as the ``logfwd`` command."""

from .cli import main

raise SystemExit(main())
